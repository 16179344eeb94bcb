"""The "Class protocol" example of the nwebsocket README, on roomcast.

Only the import differs from the README, and the URL may be given on the
command line (the README's echo service by default). Run: python
examples/nwebsocket_class.py [URL]; it prints "Opened connection", the
list of messages received (['text'] from an echo server), then "Closed
connection".
"""

# example_class.py
import sys
import time

from roomcast.compat.nwebsocket import WebSocket

url = sys.argv[1] if len(sys.argv) > 1 else "wss://ws.postman-echo.com/raw"


class WSProtocolLogic(WebSocket):
    def __init__(self, url):
        super().__init__(url)

        self.messages = []

        # wait for connection, close or error
        while not self.readyState:
            time.sleep(1e-4)

    def onopen(self):
        print("Opened connection")

    def onclose(self):
        print("Closed connection")

    def onerror(self, e):
        print("Connection error", e)

    def onmessage(self, m):
        self.messages.append(m)


wscn = WSProtocolLogic(url)

wscn.send("text")
time.sleep(1.0)

print(wscn.messages)

wscn.close()
