// The console page of hartvm serve: the VMs (GET /vms), buttons that call the
// HTTP API, and an xterm.js terminal attached to a VM's shell over the
// WebSocket /vms/NAME/terminal. The page's cookie authenticates every request
// (see serve.py); guest output is hostile, so it reaches the page only
// through the terminal emulator or as text (textContent), never as HTML.
"use strict";

const CHUNK = 16384;            // bytes of one keystroke message: the server takes 64 KiB at most
const REFRESH_MS = 3000;        // how often the VM list and the attached VM's log are read

const term = new Terminal({ cursorBlink: true, scrollback: 5000,
                            fontFamily: "DejaVu Sans Mono, Menlo, monospace" });
const fit = new FitAddon.FitAddon();
term.loadAddon(fit);
term.open(document.getElementById("terminal"));
fit.fit();
new ResizeObserver(() => fit.fit()).observe(document.getElementById("terminal"));

const encoder = new TextEncoder();
let socket = null;              // the attached terminal's WebSocket
let attached = null;            // its VM's name

function setStatus(text, error = false) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = error ? "error" : "";
}

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const type = response.headers.get("Content-Type") || "";
  const answer = type.startsWith("application/json") ? await response.json()
                                                     : await response.text();
  if (!response.ok) {
    throw new Error(answer && answer.error ? answer.error : `HTTP ${response.status}`);
  }
  return answer;
}

// Runs an action of a button, its outcome in the status line (what it returns, or done).
async function act(what, action) {
  setStatus(what + "…");
  try {
    const done = await action();
    setStatus(done || what + ": done");
  } catch (error) {
    setStatus(what + ": " + error.message, true);
  }
  refresh();
}

function send(bytes) {
  if (!socket || socket.readyState !== WebSocket.OPEN) return;
  for (let start = 0; start < bytes.length; start += CHUNK) {
    socket.send(bytes.subarray(start, start + CHUNK));
  }
}

term.onData((data) => send(encoder.encode(data)));
term.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0) & 255)));
term.onResize(({ rows, cols }) => {
  if (socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify({ rows, columns: cols }));
  }
});
// Ctrl+Shift+C copies the selection and Ctrl+Shift+V lets the browser paste (as in
// terminal programs), since Ctrl+C and Ctrl+V belong to the guest.
term.attachCustomKeyEventHandler((event) => {
  if (event.type !== "keydown" || !event.ctrlKey || !event.shiftKey) return true;
  if (event.code === "KeyC" && term.hasSelection()) {
    navigator.clipboard.writeText(term.getSelection());
    return false;
  }
  return event.code !== "KeyV";
});

function detach(say = true) {
  if (socket) {
    socket.onclose = null;
    socket.close();
    socket = null;
    if (say) term.write("\r\n\x1b[2m[detached]\x1b[0m\r\n");
  }
}

function attach(name) {
  detach(false);
  attached = name;
  term.reset();
  document.getElementById("title").textContent = `${name}: connecting… (a VM runs one ` +
    "command at a time: this waits for the one it runs)";
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/vms/${encodeURIComponent(name)}` +
                           `/terminal?rows=${term.rows}&columns=${term.cols}`);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    document.getElementById("title").textContent = `${name}: shell (TERM=xterm-256color; ` +
      "Ctrl+Shift+C copies, Ctrl+Shift+V pastes)";
    term.focus();
  };
  ws.onmessage = (event) => {
    if (typeof event.data !== "string") {
      term.write(new Uint8Array(event.data));
      return;
    }
    const end = JSON.parse(event.data);
    const text = "error" in end ? `error: ${end.error}` : `exited with status ${end.exit}`;
    term.write(`\r\n\x1b[2m[${text}]\x1b[0m\r\n`);
  };
  ws.onclose = () => {
    if (socket === ws) socket = null;
    document.getElementById("title").textContent = `${name}: detached (attach again for ` +
      "a new shell)";
  };
  socket = ws;
  refresh();
}

// Runs an action that needs the VM between commands: the attached shell is one,
// so it is detached first and a new one attached after.
async function between(name, what, action) {
  const again = attached === name && socket !== null;
  if (again) detach();
  await act(what, action);
  if (again) attach(name);
}

function button(label, onclick) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = label;
  element.dataset.action = label;
  element.onclick = onclick;
  return element;
}

function row(vm) {
  const tr = document.createElement("tr");
  tr.dataset.vm = vm.name;
  if (vm.name === attached) tr.className = "attached";
  for (const text of [vm.name, vm.state, `${vm.memory >> 20}M`]) {
    const td = document.createElement("td");
    td.textContent = text;
    tr.appendChild(td);
  }
  const actions = document.createElement("td");
  actions.append(
    button("attach", () => attach(vm.name)),
    button("fork", () => between(vm.name, `fork ${vm.name}`, async () => {
      const clones = await api("POST", `/vms/${encodeURIComponent(vm.name)}/forks`,
                               { count: 1 });
      return `forked ${vm.name}: ${clones.map((clone) => clone.name).join(", ")}`;
    })),
    button("snapshot", () => {
      const snapshot = prompt(`snapshot ${vm.name} as`, `${vm.name}-snap`);
      if (snapshot) {
        between(vm.name, `snapshot ${vm.name}`, async () => {
          await api("POST", `/vms/${encodeURIComponent(vm.name)}/snapshots`, { name: snapshot });
          return `snapshot ${vm.name}: saved as ${snapshot} (start a VM from it above)`;
        });
      }
    }),
    button("stop", () => {
      if (!confirm(`stop ${vm.name}?`)) return;
      if (attached === vm.name) detach();
      act(`stop ${vm.name}`, async () => {
      await api("DELETE", `/vms/${encodeURIComponent(vm.name)}`);
    });
    }));
  tr.appendChild(actions);
  return tr;
}

async function refresh() {
  try {
    const vms = await api("GET", "/vms");
    document.querySelector("#vms tbody").replaceChildren(...vms.map(row));
  } catch (error) {
    setStatus("the VM list: " + error.message, true);
  }
  if (attached) {
    const log = document.getElementById("log");
    const bottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    try {
      log.textContent = await api("GET", `/vms/${encodeURIComponent(attached)}/log`);
    } catch (error) {
      log.textContent = error.message;
    }
    if (bottom) log.scrollTop = log.scrollHeight;
  }
}

document.getElementById("start").onsubmit = (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const body = { image: form.get("image") || "busybox", memory: form.get("memory") || "256M" };
  if (form.get("name")) body.name = form.get("name");
  if (form.get("snapshot")) body.snapshot = form.get("snapshot");
  act("start", async () => `started ${(await api("POST", "/vms", body)).name}`);
};
document.getElementById("log-refresh").onclick = refresh;
refresh();
setInterval(refresh, REFRESH_MS);

// Keystroke to echo, as the page sees it: ``count`` times a key typed at the
// prompt (through xterm.js's input, as a keypress) until its echo arrives on
// the WebSocket; then the keys are erased. Milliseconds, for the tests and
// make bench.
async function echoLatencies(count = 30) {
  const times = [];
  for (let i = 0; i < count; i++) {
    const echoed = nextOutput((data) => data.includes(120));     // an x
    const started = performance.now();
    term.input("x", true);
    times.push((await echoed) - started);
  }
  const erased = nextOutput(() => true);
  term.input("\x15", true);              // Ctrl+U: the line is the prompt again
  await erased;
  return times;
}

// When output that ``test(bytes)`` accepts next arrives (performance.now()).
function nextOutput(test) {
  const ws = socket;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no echo in 10 s")), 10000);
    const listener = (event) => {
      if (typeof event.data !== "string" && test(new Uint8Array(event.data))) {
        clearTimeout(timer);
        ws.removeEventListener("message", listener);
        resolve(performance.now());
      }
    };
    ws.addEventListener("message", listener);
  });
}

window.hartvm = { term, fit, attach, detach, echoLatencies,
                  get socket() { return socket; } };
