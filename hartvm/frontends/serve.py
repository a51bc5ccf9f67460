"""``hartvm serve``: an HTTP API over the long-running VM processes.

Every route maps onto ``RemoteVM`` and the registry (vmm/client.py,
vmm/registry.py): the VMs stay processes of their own, and this server
holds no state of theirs but the commands it is streaming. FastAPI over
uvicorn: the OpenAPI description (``/openapi.json``) is generated from the
routes and their pydantic models, so it cannot drift from what the server
does, and uvicorn is a maintained HTTP/1.1 server with chunked responses.

Blocking calls (a VM's control socket, a command that runs for an hour)
run in threads, never on the event loop: a slow VM or a slow client holds
its own thread only. A command's output reaches its client through a
window of ``WINDOW`` chunks: a client that reads slowly slows its own
command (the guest waits to write, as through a pipe), and one that goes
away kills it, as ``hartvm exec`` does when it is interrupted.

Security: a bearer token on every request, checked (in constant time)
before a byte of the body is read or anything is done; bodies bounded
(``BODY_LIMIT``, ``UPLOAD_LIMIT`` for files); loopback by default. The
token grants what the user's account can do (a VM may share any of the
user's directories), so it is kept in a file only the user can read.

A browser cannot send that header with a page load or a WebSocket, so the
browser console (web_console.py) is let in as Jupyter lets its pages in:
``/console?token=TOKEN`` is exchanged once for an HttpOnly, SameSite=Strict
cookie (an HMAC of the token, compared in constant time like the header),
and a request that comes with the cookie alone must come from the
server's own origin when it can change anything (a WebSocket, a method
other than GET): another site's page cannot drive the VMs through the
user's browser, not even through a WebSocket, which SameSite does not
cover everywhere.
"""

import asyncio
import base64
import binascii
import hmac
import ipaddress
import json
import os
import secrets
import shutil
import urllib.parse
import socket
import sys
import threading
from functools import partial

import anyio
import uvicorn
from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from .. import __version__
from ..errors import HartvmError, shown
from ..vmm import registry
from ..vmm.arguments import check_timeout, command_words
from ..vmm.client import REQUEST_TIMEOUT, RemoteVM
from ..vmm.results import CommandTimeout, GuestError
from . import web_console

BODY_LIMIT = 16 << 20           # bytes of a JSON request (a command's stdin travels in it)
UPLOAD_LIMIT = 256 << 20        # bytes of an uploaded file; a download is bounded alike
WINDOW = 64                     # output chunks on their way to a client, at most
COMMANDS_PER_VM = 16            # commands running or waiting in one VM, at most (then 409)
BLOCKING_THREADS = 256          # VM requests (start, stop, snapshot...) in flight, at most
TOKEN_FILE = "serve-token"      # in the state directory, mode 0600
SNAPSHOTS = "snapshots"         # the state directory's folder of named snapshots
COOKIE = "hartvm-console"       # the browser console's cookie
NO_TOKEN = "no valid bearer token (Authorization: Bearer $HARTVM_TOKEN; in a browser, " \
           "open the console URL that hartvm serve printed)"


class VMCreate(BaseModel):
    name: str | None = Field(None, description="the VM's name (default: vm-N)")
    image: str = Field("busybox", description="guest image (hartvm image ls)")
    snapshot: str | None = Field(None, description="start from this named snapshot instead")
    memory: str = Field("256M", description="guest RAM, e.g. 256M or 1G")
    harts: int = Field(1, description="number of harts")
    volumes: list[str] = Field([], description="HOST_DIR:GUEST_DIR[:ro] shares")
    network: str = Field("none", description="none, user or host")
    publish: list[str] = Field([], description="[HOST_IP:]HOST_PORT:GUEST_PORT[/udp]")
    disk_size: str | None = Field(None, description="an image's root disk size, e.g. 8G")


class VMOut(BaseModel):
    name: str
    state: str = Field(description="running, starting or dead")
    pid: int
    memory: int = Field(description="guest RAM, bytes")
    harts: int
    started: float = Field(description="Unix time")
    uptime: float = Field(description="seconds")
    private: int = Field(description="host memory this VM alone uses, bytes")
    shared: int = Field(description="host memory it shares with other processes, bytes")
    parent: str = Field(description="the VM it was forked from, or empty")


class CommandRequest(BaseModel):
    args: list[str] = Field(min_length=1, description="the command and its arguments")
    input: str | None = Field(None, description="stdin, as text (UTF-8)")
    input_base64: str | None = Field(None, description="stdin, as base64 bytes")
    env: dict[str, str] = {}
    cwd: str | None = None
    timeout: float | None = Field(None, description="seconds; then the command is killed")
    text: bool = Field(False, description="output as text (UTF-8, bad bytes replaced) "
                                          "instead of base64")


class SnapshotRequest(BaseModel):
    name: str = Field(description="the snapshot's name (as a VM's)")


class SnapshotOut(BaseModel):
    name: str


class ForkRequest(BaseModel):
    count: int = Field(1, ge=1, le=64)


class ErrorOut(BaseModel):
    error: str = Field(description="what went wrong, one line")


class BadGuestPath(HartvmError):
    """A guest file that cannot be read (404)."""


class Busy(HartvmError):
    """A VM with COMMANDS_PER_VM commands running or waiting (409)."""


STATUS = [(registry.NoSuchVM, 404), (BadGuestPath, 404), (registry.NameTaken, 409),
          (Busy, 409), (GuestError, 503), (HartvmError, 400)]
ERRORS = {status: {"model": ErrorOut} for status in (400, 401, 404, 409, 413, 503)}


def load_token() -> tuple[str, str | None]:
    """The token (``$HARTVM_TOKEN``, or a new one) and the file it was written to."""
    token = os.environ.get("HARTVM_TOKEN")
    if token:
        return token, None
    token = secrets.token_urlsafe(32)
    directory = registry.vms_dir().parent          # checked to be this user's alone
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / TOKEN_FILE
        temporary = directory / (TOKEN_FILE + f".{os.getpid()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(token + "\n")
        os.replace(temporary, path)
    except OSError as error:
        raise HartvmError(f"cannot write the token file in {directory}: "
                          f"{error.strerror or error}") from None
    return token, str(path)


def console_cookie(token: str) -> str:
    """The browser console's cookie for ``token``: proof of it, not the token itself."""
    return hmac.new(token.encode(), b"hartvm console cookie", "sha256").hexdigest()


class _Guard:
    """ASGI middleware: the bearer token (or the console's cookie), then the
    body read whole within its bound, before the application sees the request."""

    def __init__(self, app, token: str):
        self.app = app
        self.expected = f"Bearer {token}".encode()
        self.token = token.encode()
        self.cookie = console_cookie(token).encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        websocket = scope["type"] == "websocket"
        if not websocket and scope["path"] == "/console" and scope["query_string"]:
            return await self._exchange(scope, send)    # (even with a cookie already)
        if hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
            pass
        elif hmac.compare_digest(_cookie(headers.get(b"cookie", b"")), self.cookie):
            if (websocket or scope["method"] not in ("GET", "HEAD")) and \
                    not _same_origin(headers):
                return await _deny(scope, send, 403, "a request from another site's page")
        else:
            return await _deny(scope, send, 401, NO_TOKEN, [(b"www-authenticate", b"Bearer")])
        if websocket:
            return await self.app(scope, receive, send)
        limit = UPLOAD_LIMIT if scope["method"] == "PUT" else BODY_LIMIT
        too_large = f"request body over {limit} bytes"
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > limit:
            return await _send_error(send, 413 if length.isdigit() else 400,
                                     too_large if length.isdigit() else "bad Content-Length")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                return await _send_error(send, 413, too_large)
            if not message.get("more_body"):
                break
        body = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay():
            return body.pop() if body else await receive()
        await self.app(scope, replay, send)


    async def _exchange(self, scope, send) -> None:
        """``/console?token=TOKEN``: the cookie, and the page again without the
        token in its address (nor in the browser's history)."""
        query = urllib.parse.parse_qs(scope["query_string"].decode("latin-1"))
        given = query.get("token", [""])[0].encode("utf-8", "replace")
        if not hmac.compare_digest(given, self.token):
            return await _send_error(send, 401, NO_TOKEN, [(b"www-authenticate", b"Bearer")])
        cookie = f"{COOKIE}={self.cookie.decode()}; HttpOnly; SameSite=Strict; Path=/"
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", b"/console"), (b"set-cookie", cookie.encode()),
                                (b"cache-control", b"no-store"),
                                (b"referrer-policy", b"no-referrer"),
                                (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


def _cookie(header: bytes) -> bytes:
    """The console's cookie in a Cookie header (empty if it has none)."""
    for part in header.split(b";"):
        name, _, value = part.strip().partition(b"=")
        if name == COOKIE.encode():
            return value
    return b""


def _same_origin(headers: dict) -> bool:
    """Does the request come from a page of this server (Origin is its Host)?
    Browsers send Origin with WebSockets and with every method but GET."""
    host = headers.get(b"host")
    return host is not None and headers.get(b"origin") == b"http://" + host


async def _deny(scope, send, status: int, message: str, headers=()) -> None:
    """Refuse a request, a WebSocket's too, with a JSON error (nothing done)."""
    if scope["type"] == "http":
        return await _send_error(send, status, message, headers)
    if "websocket.http.response" not in scope.get("extensions", {}):
        return await send({"type": "websocket.close", "code": 1008})
    await _send_error(send, status, message, headers, prefix="websocket.")


async def _send_error(send, status: int, message: str, headers=(), prefix="") -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": prefix + "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": prefix + "http.response.body", "body": body})


def _error_response(error: HartvmError) -> JSONResponse:
    status = next(code for kind, code in STATUS if isinstance(error, kind))
    # A GuestError goes on with the guest's last console lines: the first line
    # is the error, the others its context.
    first, *console = str(error).splitlines() or [""]
    return JSONResponse({"error": first, **({"console": console} if console else {})},
                        status_code=status)


class _Command(RemoteVM):
    """A handle for one command, which another thread can kill: shutting down its
    control connection wakes the thread that runs it, and the VM process kills
    a command whose client went away (the VM runs on)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.connection = None
        self.killed = False
        self.lock = threading.Lock()

    def _connect(self, timeout=REQUEST_TIMEOUT):
        connection = super()._connect(timeout)
        with self.lock:
            if self.killed:         # killed before it started
                connection.close()
                raise GuestError(f"VM {self.name}: the command was killed")
            self.connection = connection
        return connection

    def kill(self) -> None:
        with self.lock:
            self.killed = True
            if self.connection is not None:
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass            # it has ended


class _ClientGone(Exception):
    """Raised in a command's output callable: its client stopped reading."""


class _Window:
    """Output chunks from a command's thread to its client's coroutine, at most
    WINDOW on their way: the thread waits for room (the guest then waits to
    write), and gives up once the client has gone."""

    def __init__(self, loop):
        self.loop = loop
        self.items = asyncio.Queue()
        self.room = threading.Semaphore(WINDOW)
        self.gone = False

    def put(self, item) -> None:            # in the command's thread
        while not self.room.acquire(timeout=1) and not self.gone:
            pass
        if self.gone:
            raise _ClientGone
        self.loop.call_soon_threadsafe(self.items.put_nowait, item)

    async def get(self):
        item = await self.items.get()
        self.room.release()
        return item

    def close(self) -> None:
        self.gone = True
        self.room.release()


def create_app(token: str) -> FastAPI:
    """The application, every route behind ``token``."""
    # No /docs pages: they load scripts from a CDN (the console serves its own).
    app = FastAPI(title="hartvm", version=__version__, responses=ERRORS,
                  docs_url=None, redoc_url=None,
                  description="Long-running RISC-V VMs: create, run commands (output "
                              "streamed as NDJSON), files, snapshots and forks. Every "
                              "request needs `Authorization: Bearer TOKEN`.")
    limiter = anyio.CapacityLimiter(BLOCKING_THREADS)
    commands: dict[str, tuple[str, _Command]] = {}

    async def blocking(function, *args, **options):
        return await anyio.to_thread.run_sync(partial(function, *args, **options),
                                              limiter=limiter)

    @app.exception_handler(HartvmError)
    async def hartvm_error(request, error):
        return _error_response(error)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request, error):
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return JSONResponse({"error": shown(f"{where}: {first.get('msg', 'invalid')}")},
                            status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request, error):
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code,
                            headers=error.headers)

    def vm_out(info: registry.VMInfo) -> VMOut:
        return VMOut(name=info.name, state=info.state, pid=info.pid, memory=info.memory,
                     harts=info.harts, started=info.started, uptime=info.uptime,
                     private=info.private, shared=info.shared, parent=info.parent)

    def snapshots_dir():
        directory = registry.vms_dir().parent / SNAPSHOTS
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        return directory

    def snapshot_path(name: str):
        try:
            registry.check_name(name)
        except HartvmError:
            raise HartvmError(f"bad snapshot name {shown(name)}: use a VM name's "
                              f"letters") from None
        return snapshots_dir() / name

    # --- VMs ---------------------------------------------------------------------
    @app.get("/vms", response_model=list[VMOut], summary="list the VMs")
    async def list_vms():
        return [vm_out(info) for info in await blocking(registry.list_vms)]

    @app.post("/vms", response_model=VMOut, status_code=201,
              summary="start a VM from an image or a named snapshot")
    async def create_vm(body: VMCreate):
        snapshot = None
        if body.snapshot is not None:
            snapshot = snapshot_path(body.snapshot)
            if not snapshot.is_dir():
                raise BadGuestPath(f"no snapshot named {body.snapshot}")
        vm = await blocking(RemoteVM.up, name=body.name, memory=body.memory, smp=body.harts,
                            snapshot=snapshot, progress=False, volumes=body.volumes,
                            image=body.image, disk_size=body.disk_size,
                            network=body.network, publish=body.publish)
        return vm_out(await blocking(registry.find, vm.name))

    @app.get("/vms/{name}", response_model=VMOut, summary="a VM's state and memory")
    async def vm_info(name: str):
        return vm_out(await blocking(registry.find, name))

    @app.delete("/vms/{name}", status_code=204, summary="stop a VM")
    async def stop_vm(name: str):
        await blocking(RemoteVM(name).stop)
        return Response(status_code=204)

    # --- commands ------------------------------------------------------------------
    @app.post("/vms/{name}/commands", summary="run a command; its output streamed",
              response_class=StreamingResponse,
              responses={200: {"content": {"application/x-ndjson": {}}, "description":
                         "NDJSON lines: {\"id\"} first; {\"stream\": \"stdout\"|\"stderr\", "
                         "\"text\" or \"base64\"} as output comes; last {\"exit\": status} "
                         "(with \"timeout\": true after a timeout), {\"killed\": true} or "
                         "{\"error\"}"}})
    async def run_command(name: str, body: CommandRequest):
        args, env, cwd = command_words(body.args, body.env, body.cwd)
        check_timeout(body.timeout)
        if body.input is not None and body.input_base64 is not None:
            raise HartvmError("give input or input_base64, not both")
        stdin = (body.input or "").encode()
        if body.input_base64 is not None:
            try:
                stdin = base64.b64decode(body.input_base64, validate=True)
            except binascii.Error:
                raise HartvmError("input_base64 is not base64") from None
        info = await blocking(registry.find, name)
        if info.state != "running":
            raise GuestError(f"VM {name} is {info.state}")
        if sum(vm == name for vm, _ in commands.values()) >= COMMANDS_PER_VM:
            raise Busy(f"VM {name} has {COMMANDS_PER_VM} commands running or waiting")
        command, window = _Command(name), _Window(asyncio.get_running_loop())
        key = secrets.token_hex(8)
        commands[key] = (name, command)

        def sink(stream):
            if body.text:
                return lambda data: window.put({"stream": stream, "text": data})
            return lambda data: window.put(
                {"stream": stream, "base64": base64.b64encode(data).decode()})

        def work():
            try:
                result = command.run(args, input=stdin, env=env, cwd=cwd,
                                     timeout=body.timeout, stdout=sink("stdout"),
                                     stderr=sink("stderr"), text=body.text,
                                     errors="replace" if body.text else None)
                end = {"exit": result.returncode}
            except CommandTimeout:
                end = {"exit": 124, "timeout": True}
            except _ClientGone:
                return
            except Exception as error:      # noqa: BLE001 - the stream must end
                end = {"killed": True} if command.killed else \
                    {"error": (str(error).splitlines() or [""])[0]}
            try:
                window.put(end)
                window.put(None)
            except _ClientGone:
                pass

        threading.Thread(target=work, name=f"command {key}", daemon=True).start()

        async def lines():
            try:
                yield json.dumps({"id": key}) + "\n"
                while (item := await window.get()) is not None:
                    yield json.dumps(item) + "\n"
            finally:
                window.close()
                command.kill()          # a client gone: the command too (no-op once ended)
                commands.pop(key, None)
        return StreamingResponse(lines(), media_type="application/x-ndjson",
                                 headers={"X-Command-Id": key})

    @app.delete("/vms/{name}/commands/{key}", status_code=204,
                summary="kill a running command (its stream ends with {\"killed\": true})")
    async def kill_command(name: str, key: str):
        vm, command = commands.get(key, (None, None))
        if vm != name:
            raise BadGuestPath(f"no command {shown(key)} runs in VM {shown(name)}")
        command.kill()
        return Response(status_code=204)

    # --- files ---------------------------------------------------------------------
    @app.put("/vms/{name}/files", status_code=204,
             summary=f"write the request body to a guest file (at most {UPLOAD_LIMIT} bytes)")
    async def upload(name: str, request: Request,
                     path: str = Query(description="the guest path"),
                     mode: str = Query("644", description="octal permissions")):
        try:
            permissions = int(mode, 8)
        except ValueError:
            raise HartvmError(f"bad mode {shown(mode)}: octal, such as 644") from None
        data = await request.body()
        await blocking(RemoteVM(name).put_file, data, path, permissions)
        return Response(status_code=204)

    @app.get("/vms/{name}/files", summary="a guest file's content",
             response_class=Response,
             responses={200: {"content": {"application/octet-stream": {}}}})
    async def download(name: str, path: str = Query(description="the guest path")):
        chunks, size = [], [0]

        def collect(data: bytes) -> None:
            size[0] += len(data)
            if size[0] > UPLOAD_LIMIT:
                raise HartvmError(f"{shown(path)} is over {UPLOAD_LIMIT} bytes: "
                                  f"use hartvm cp")
            chunks.append(data)
        result = await blocking(RemoteVM(name).run, ["cat", "--", path], stdout=collect)
        if result.returncode != 0:
            reason = result.stderr.decode(errors="replace").strip().splitlines()
            raise BadGuestPath(f"cannot read {shown(path)} in VM {name}: "
                               f"{shown(reason[-1] if reason else 'failed')}")
        return Response(b"".join(chunks), media_type="application/octet-stream")

    # --- snapshots and forks ----------------------------------------------------------
    @app.get("/snapshots", response_model=list[SnapshotOut], summary="the named snapshots")
    async def list_snapshots():
        return [SnapshotOut(name=path.name) for path in sorted(snapshots_dir().iterdir())
                if path.is_dir() and registry.NAME.fullmatch(path.name)]

    @app.post("/vms/{name}/snapshots", response_model=SnapshotOut, status_code=201,
              summary="save a VM as a named snapshot (it pauses between commands)")
    async def snapshot(name: str, body: SnapshotRequest):
        path = snapshot_path(body.name)
        registry.check_name(name)
        if os.path.lexists(path):
            raise registry.NameTaken(f"a snapshot named {body.name} exists already")
        await blocking(RemoteVM(name).snapshot, path)
        return SnapshotOut(name=body.name)

    @app.delete("/snapshots/{snapshot}", status_code=204, summary="remove a named snapshot")
    async def remove_snapshot(snapshot: str):
        path = snapshot_path(snapshot)
        if not path.is_dir():
            raise BadGuestPath(f"no snapshot named {snapshot}")
        await blocking(shutil.rmtree, path)
        return Response(status_code=204)

    @app.post("/vms/{name}/forks", response_model=list[VMOut], status_code=201,
              summary="clones of a running VM, sharing its memory copy-on-write")
    async def fork(name: str, body: ForkRequest):
        clones = await blocking(RemoteVM(name).fork, body.count)
        return [vm_out(await blocking(registry.find, clone.name)) for clone in clones]

    web_console.add_routes(app, blocking)
    return app


def serve(host: str, port: int) -> int:
    """Listen on ``host:port`` until interrupted (SIGINT or SIGTERM)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
        listener.listen(128)
    except OSError as error:
        listener.close()
        raise HartvmError(f"cannot listen on {shown(host)}:{port}: "
                          f"{error.strerror or error}") from None
    token, token_file = load_token()
    if not ipaddress.ip_address(host).is_loopback:
        print(f"hartvm: serving on {host}, not loopback: whoever reaches it with the "
              f"token controls your VMs", file=sys.stderr)
    bound = listener.getsockname()[1]
    shown_host = f"[{host}]" if family == socket.AF_INET6 else host
    where = "$HARTVM_TOKEN" if token_file is None else token_file
    print(f"hartvm serve: http://{shown_host}:{bound} (bearer token in {where})")
    print(f"hartvm console: http://{shown_host}:{bound}/console?token="
          f"{urllib.parse.quote(token, safe='')}", flush=True)
    config = uvicorn.Config(guarded_app(token), log_level="warning", lifespan="off",
                            ws_max_size=web_console.MESSAGE_LIMIT)
    uvicorn.Server(config).run(sockets=[listener])
    return 0


def guarded_app(token: str):
    """The application behind its guard (what uvicorn serves)."""
    return _Guard(create_app(token), token)
