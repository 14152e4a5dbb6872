// The page of `kvmlab web`: the lab's nodes, and for the chosen one its serial console and its screen.
import RFB from '/novnc/core/rfb.js';

const params = new URLSearchParams(location.search);
const key = params.get('key') || '';
const wsBase = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;
// Timings for the browser tests and anyone curious (ms since the page started loading).
window.kvmlab = { times: {}, vnc: 'none' };
let serial = null;
let screen = null;

async function loadLab() {
  const response = await fetch(`/api/lab?key=${encodeURIComponent(key)}`, { cache: 'no-store' });
  if (!response.ok) throw Object.assign(new Error(await response.text()), { status: response.status });
  return response.json();
}

// The page is drawn from the first answer: a server that is busy or restarting is asked again, and the
// page says why it waits. A refused key is not asked again.
async function firstLab() {
  for (;;) {
    try {
      return await loadLab();
    } catch (err) {
      document.getElementById('title').textContent = `kvmlab · ${err.status === 403 ? 'refused' : 'waiting for the lab'}: ${err.message}`;
      if (err.status === 403) throw err;
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
}

function showNodes(lab) {
  document.getElementById('title').textContent = `kvmlab · ${lab.lab} (run ${lab.run})`;
  if (lab.task) {
    const task = document.getElementById('task');
    task.href = `/task?key=${encodeURIComponent(key)}`;
    task.hidden = false;
  }
  const body = document.querySelector('#nodes tbody');
  body.replaceChildren();
  for (const node of lab.nodes) {
    const row = document.createElement('tr');
    row.className = 'node';
    row.dataset.name = node.name;
    for (const [text, cls] of [[node.name, ''], [node.state, `state-${node.state}`], [node.address, ''], [node.roles.join(', '), '']]) {
      const cell = document.createElement('td');
      cell.textContent = text;
      if (cls) cell.className = cls;
      row.append(cell);
    }
    row.addEventListener('click', () => openNode(node));
    body.append(row);
  }
}

function openSerial(node) {
  const holder = document.getElementById('serial');
  holder.replaceChildren();
  const term = new Terminal({ cursorBlink: true, rows: 24, scrollback: 2000 });
  term.open(holder);
  const ws = new WebSocket(`${wsBase}/ws/serial/${node.token}`);
  ws.binaryType = 'arraybuffer';
  ws.onopen = () => { window.kvmlab.times.serialOpen = performance.now(); };
  ws.onmessage = (event) => {
    if (window.kvmlab.times.serialFirstByte === undefined) window.kvmlab.times.serialFirstByte = performance.now();
    term.write(new Uint8Array(event.data));
  };
  ws.onclose = (event) => term.write(`\r\n[kvmlab: console closed${event.reason ? ': ' + event.reason : ''}]\r\n`);
  term.onData((data) => { if (ws.readyState === WebSocket.OPEN) ws.send(data); });
  term.focus();
  window.kvmlab.term = term;
  return { close: () => { ws.close(); term.dispose(); } };
}

function setVncStatus(text, state) {
  document.getElementById('vnc-status').textContent = text;
  window.kvmlab.vnc = state;
}

function openScreen(node) {
  const pane = document.getElementById('screen-pane');
  pane.hidden = !node.vnc;
  if (!node.vnc) return null;
  const holder = document.getElementById('screen');
  holder.replaceChildren();
  setVncStatus('connecting…', 'connecting');
  const rfb = new RFB(holder, `${wsBase}/ws/vnc/${node.token}`, { shared: true, wsProtocols: ['binary'] });
  rfb.scaleViewport = true;
  rfb.addEventListener('connect', () => {
    window.kvmlab.times.vncConnected = performance.now();
    document.getElementById('vnc-auth').hidden = true;
    setVncStatus(`connected (${node.video})`, 'connected');
  });
  rfb.addEventListener('disconnect', (e) => {
    // A refused password ends the connection too: keep saying why.
    if (window.kvmlab.vnc !== 'refused') setVncStatus(e.detail.clean ? 'disconnected' : 'connection lost', 'disconnected');
  });
  rfb.addEventListener('securityfailure', (e) => setVncStatus(`refused: ${e.detail.reason || 'wrong password'}`, 'refused'));
  rfb.addEventListener('credentialsrequired', () => {
    setVncStatus('this screen has a VNC password', 'password');
    const form = document.getElementById('vnc-auth');
    form.hidden = false;
    form.onsubmit = (event) => {
      event.preventDefault();
      rfb.sendCredentials({ password: document.getElementById('vnc-password').value });
    };
  });
  window.kvmlab.rfb = rfb;
  return { close: () => rfb.disconnect() };
}

function openNode(node) {
  serial?.close();
  screen?.close();
  for (const row of document.querySelectorAll('#nodes tr.node')) row.classList.toggle('selected', row.dataset.name === node.name);
  document.getElementById('node').hidden = false;
  document.getElementById('node-name').textContent = node.name;
  document.getElementById('login').textContent = `log in as ${node.login.user}, password ${node.login.password}`;
  history.replaceState(null, '', `?key=${encodeURIComponent(key)}&node=${encodeURIComponent(node.name)}`);
  serial = openSerial(node);
  screen = openScreen(node);
}

// Node states change (a test powers one off, a trainee reboots one): refresh them, keep the rest.
function refreshStates(lab) {
  for (const node of lab.nodes) {
    const cell = document.querySelector(`#nodes tr.node[data-name="${CSS.escape(node.name)}"] td:nth-child(2)`);
    if (cell && cell.textContent !== node.state) {
      cell.textContent = node.state;
      cell.className = `state-${node.state}`;
    }
  }
}

const lab = await firstLab();
showNodes(lab);
setInterval(() => loadLab().then(refreshStates).catch(() => {}), 5000);
const wanted = lab.nodes.find((n) => n.name === params.get('node'));
if (wanted) openNode(wanted);
window.kvmlab.ready = true;
