"""The browser console of ``hartvm serve``: a page listing the VMs, with a
terminal (xterm.js) attached to a VM's shell over a WebSocket.

The page and its scripts are static files: ``console_web/`` holds the page
(index.html, console.js, console.css) and, once ``make console`` has run
``npm ci`` there, xterm.js and its fit addon in ``node_modules`` (from the
npm registry, pinned by package-lock.json, never committed). Only the files
named in ``ASSETS`` are served, so no request names a path.

A terminal is the VM's own terminal session (``RemoteVM.terminal``, the
connection behind ``hartvm shell``) bridged on the event loop with asyncio
streams, no thread: WebSocket binary messages are keystrokes (KEYS frames),
text messages ``{"rows", "columns"}`` resize it (RESIZE frames), the guest's
output goes back as binary messages and the shell's end as one text
message, ``{"exit": status}`` or ``{"error": ...}``. A slow browser slows
its own VM's terminal only (the bridge stops reading, the VM waits to
write, as through a pipe); a browser that goes away closes the connection,
and the VM kills the shell. Messages are bounded by the server's WebSocket
limit (``MESSAGE_LIMIT``, what one KEYS frame may carry); bad ones are
ignored.

Authentication is the guard's (serve.py): the page's URL carries the token
once and gets a cookie in exchange, as Jupyter does.
"""

import asyncio
import json
from pathlib import Path

from fastapi import FastAPI, Query, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response

from ..errors import HartvmError
from ..vmm import protocol, registry
from ..vmm.client import RemoteVM

HERE = Path(__file__).parent / "console_web"
MODULES = HERE / "node_modules" / "@xterm"
ASSETS = {                      # what /console/NAME serves, and its type
    "console.js": (HERE / "console.js", "text/javascript"),
    "console.css": (HERE / "console.css", "text/css"),
    "xterm.js": (MODULES / "xterm" / "lib" / "xterm.js", "text/javascript"),
    "xterm.css": (MODULES / "xterm" / "css" / "xterm.css", "text/css"),
    "addon-fit.js": (MODULES / "addon-fit" / "lib" / "addon-fit.js", "text/javascript"),
}
PAGE = HERE / "index.html"
NOT_BUILT = "the console's scripts are not installed: run make console " \
            "(npm ci in hartvm/frontends/console_web)"
TERM = "xterm-256color"         # what xterm.js emulates: colours for the guest's programs
MESSAGE_LIMIT = protocol.MAX_TERMINAL_FRAME     # bytes of one WebSocket message, at most
TERMINALS = 32                  # terminals open at once through one server, at most
LOG_TAIL = 1 << 20              # bytes of a VM's console log the page is given, at most
# The page's own scripts and styles only (xterm.js sets styles inline); never in a frame.
HEADERS = {"Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                      "img-src 'self' data:; frame-ancestors 'none'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-store"}


def add_routes(app: FastAPI, blocking) -> None:
    """The page, its files, a VM's console log and its terminal, on ``app``;
    ``blocking(function, *args)`` runs a blocking call off the event loop."""
    terminals = set()

    def built() -> bool:
        return PAGE.is_file() and all(path.is_file() for path, _ in ASSETS.values())

    @app.get("/console", include_in_schema=False)
    async def page():
        if not built():
            return JSONResponse({"error": NOT_BUILT}, status_code=503)
        return FileResponse(PAGE, media_type="text/html", headers=HEADERS)

    @app.get("/console/{asset}", include_in_schema=False)
    async def asset(asset: str):
        if asset not in ASSETS:
            return JSONResponse({"error": "no such file"}, status_code=404)
        path, media_type = ASSETS[asset]
        if not path.is_file():
            return JSONResponse({"error": NOT_BUILT}, status_code=503)
        return FileResponse(path, media_type=media_type, headers=HEADERS)

    @app.get("/vms/{name}/log", summary=f"the end of a VM's console log (at most {LOG_TAIL} "
                                        f"bytes), as hartvm logs prints it",
             response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def log(name: str):
        path = (await blocking(registry.find, name)).directory / registry.LOG
        return Response(await blocking(_tail, path, LOG_TAIL),
                        media_type="text/plain; charset=utf-8")

    @app.websocket("/vms/{name}/terminal")
    async def terminal(websocket: WebSocket, name: str, rows: str = Query("24"),
                       columns: str = Query("80")):
        await websocket.accept()
        if len(terminals) >= TERMINALS:
            return await _end(websocket, {"error": f"{TERMINALS} terminals are open already"})
        terminals.add(websocket)            # (counted while it connects too)
        try:
            try:
                size = protocol.terminal_size(_number(rows), _number(columns))
                sock = await blocking(RemoteVM(name).terminal, *size, TERM)
            except (HartvmError, protocol.ProtocolError) as error:
                return await _end(websocket, {"error": _first_line(str(error))})
            try:
                sock.setblocking(False)
                reader, writer = await asyncio.open_unix_connection(sock=sock)
                await _bridge(websocket, reader, writer)
            finally:
                sock.close()            # the VM kills the shell of a client gone
        finally:
            terminals.discard(websocket)


async def _bridge(websocket: WebSocket, reader, writer) -> None:
    """Move bytes both ways until the shell ends or the browser goes away."""
    keys = asyncio.create_task(_keys(websocket, writer))
    output = asyncio.create_task(_output(websocket, reader))
    done, pending = await asyncio.wait({keys, output}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    writer.close()
    failed = {task for task in done if task.exception() is not None}   # the browser gone
    await _end(websocket, output.result() if output in done - failed else None)


async def _keys(websocket: WebSocket, writer) -> None:
    """The browser's messages, as KEYS and RESIZE frames, until it goes away."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("bytes") is not None:
            writer.write(protocol.frame(protocol.KEYS, message["bytes"]))
        elif message.get("text") is not None:
            try:
                size = protocol.decode_json(message["text"].encode())
                rows, columns = protocol.terminal_size(size.get("rows"), size.get("columns"))
            except protocol.ProtocolError:
                continue            # a bad message changes nothing
            writer.write(protocol.frame(protocol.RESIZE, json.dumps(
                {"rows": rows, "columns": columns}).encode()))
        try:
            await writer.drain()
        except OSError:
            return                  # the VM went away: the output side says why


async def _output(websocket: WebSocket, reader) -> dict:
    """The guest's output to the browser, until the shell's REPLY: its end."""
    try:
        while True:
            kind, length = protocol.HEADER.unpack(await reader.readexactly(protocol.HEADER.size))
            if length > protocol.MAX_FRAME:
                return {"error": "the VM sent a frame too large"}
            payload = await reader.readexactly(length)
            if kind == protocol.OUT:
                await websocket.send_bytes(payload)
            elif kind == protocol.REPLY:
                reply = protocol.decode_json(payload)
                if reply.get("ok"):
                    return {"exit": reply.get("status")}
                return {"error": _first_line(str(reply.get("error", "failed")))}
    except (asyncio.IncompleteReadError, OSError, protocol.ProtocolError):
        return {"error": "the VM went away"}


async def _end(websocket: WebSocket, message: dict | None) -> None:
    """Say how the terminal ended (to a browser still there), and close."""
    try:
        if message is not None:
            await websocket.send_text(json.dumps(message))
        await websocket.close()
    except Exception:     # noqa: BLE001 - the browser has gone: nothing to tell it
        pass


def _first_line(text: str) -> str:
    return (text.splitlines() or [""])[0]


def _number(text: str) -> int:
    if not text.isdigit() or len(text) > 6:
        raise protocol.ProtocolError(f"a terminal size of {text[:20]!r}")
    return int(text)


def _tail(path: Path, limit: int) -> bytes:
    """The last ``limit`` bytes of the file ``path`` (nothing if it is not there yet)."""
    try:
        with open(path, "rb") as file:
            file.seek(0, 2)
            file.seek(max(0, file.tell() - limit))
            return file.read(limit)
    except FileNotFoundError:
        return b""
    except OSError as error:
        raise HartvmError(f"{path}: {error.strerror or error}") from None
