"""The "Raw API" example of the nwebsocket README, on roomcast.

Only the import differs from the README, and the URL may be given on the
command line (the README's echo service by default). Run: python
examples/nwebsocket_minimal.py [URL]; it prints "Opened connection", the
echoed "text", then "Closed connection".
"""

# example_minimal.py
import sys
import time

from roomcast.compat.nwebsocket import WebSocket

url = sys.argv[1] if len(sys.argv) > 1 else "wss://ws.postman-echo.com/raw"

wscn = WebSocket(url)

wscn.onmessage = lambda m: print(m)
wscn.onopen = lambda: print("Opened connection")
wscn.onclose = lambda: print("Closed connection")
wscn.onerror = lambda e: print("Connection error", e)

while not wscn.readyState:
    time.sleep(1e-4)

wscn.send("text")
time.sleep(1.0)

wscn.close()
