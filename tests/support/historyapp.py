"""An App for the history tests: its ``chat:*`` rooms keep history."""

from roomcast import App


def history_app(size=1000, **options):
    """An App whose ``chat:*`` rooms keep ``size`` events; anyone may join
    and rejoin."""
    app = App(**options)
    app.keep_history("chat:*", size)

    @app.on("join")
    async def join(ws):
        await ws.join(ws.payload)

    @app.on_rejoin
    async def rejoin(ws, room):
        await ws.join(room)

    return app
