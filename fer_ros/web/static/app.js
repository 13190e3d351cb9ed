// fer_ros live view: one WebSocket to the server, JSON updates (hello, emotion, traces, status, models,
// reply, error) and binary camera frames (4-byte length, JSON metadata, JPEG). No libraries, no build step.

const SVG = 'http://www.w3.org/2000/svg';
const MODELS_RETRY_MS = 2000;
const $ = (id) => document.getElementById(id);

const view = {
  ws: null,
  retryMs: 1000,
  traceSeconds: 30,
  circumplex: {},
  traces: new Map(),      // face_id -> [[stamp, valence, arousal], ...]
  newestStamp: -Infinity,
  latest: null,           // the newest emotion result, drawn on the next animation frame
  results: 0,
  renderPending: false,
  frames: 0,
  imageUrl: null,
  nextId: 1,
  modelsPending: false,   // list_models failed: retrying
};

function stampText(stamp) {
  return `${stamp.sec}.${String(stamp.nanosec).padStart(9, '0')}`;
}

function stampSeconds(stamp) {
  return stamp.sec + stamp.nanosec * 1e-9;
}

function connect() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(`${scheme}//${location.host}/ws`);
  ws.binaryType = 'arraybuffer';
  view.ws = ws;
  setConnection('connecting');
  ws.onopen = () => {
    view.retryMs = 1000;
    setConnection('connected');
    send({type: 'list_models'});
  };
  ws.onmessage = (event) => {
    if (typeof event.data === 'string') {
      onMessage(JSON.parse(event.data));
    } else {
      onImage(event.data);
    }
  };
  ws.onclose = () => {
    setConnection('disconnected');
    setTimeout(connect, view.retryMs);
    view.retryMs = Math.min(view.retryMs * 2, 8000);
  };
}

function send(request) {
  if (view.ws && view.ws.readyState === WebSocket.OPEN) {
    view.ws.send(JSON.stringify({...request, id: view.nextId++}));
  }
}

function setConnection(state) {
  const badge = $('connection');
  badge.dataset.state = state;
  badge.textContent = state === 'disconnected' ? 'disconnected, retrying' : state;
}

function onMessage(message) {
  switch (message.type) {
    case 'hello': return onHello(message);
    case 'traces': return onTraces(message);
    case 'emotion': return onEmotion(message);
    case 'status': return onStatus(message);
    case 'models': return onModels(message);
    case 'reply': return onReply(message);
    case 'error': return onError(message);
  }
}

// -- hello and control ------------------------------------------------------------------------------

function onHello(hello) {
  view.traceSeconds = hello.trace_seconds;
  view.circumplex = hello.circumplex;
  const note = $('control-note');
  note.textContent = hello.control_note;
  note.dataset.allowed = String(hello.allow_control);
  for (const id of ['model-select', 'switch-model', 'self-check-samples', 'run-self-check']) {
    $(id).disabled = !hello.allow_control;
  }
  $('camera-note').textContent = `Waiting for images on ${hello.image_topic} (the emotion node publishes them with publish_annotated).`;
  $('faces-note').textContent = `Waiting for results on ${hello.emotion_topic}.`;
}

function onModels(models) {
  if (view.modelsPending) {  // the last message was why there was no list yet
    view.modelsPending = false;
    showControlMessage('', '');
  }
  const select = $('model-select');
  select.replaceChildren(...models.available_models.map((name) => new Option(name, name, false,
    name === models.active_model)));
  select.dataset.active = models.active_model;
}

function showControlMessage(kind, text) {
  const message = $('control-message');
  message.dataset.kind = kind;
  message.textContent = text;
}

function onReply(reply) {
  if (reply.request === 'switch_model') {
    showControlMessage(reply.ok ? 'ok' : 'error', reply.message);
  } else if (reply.request === 'self_check') {
    showControlMessage(reply.ok ? 'ok' : 'error', reply.ok
      ? `${reply.summary} (report: ${reply.report_path || 'not written'}; ${reply.message})` : reply.message);
    if (reply.ok) {
      showSelfCheck(reply.rows);
    }
  }
}

function onError(error) {
  showControlMessage('error', error.error);
  if (error.request === 'list_models') {  // the emotion node is not (yet) there: ask again
    view.modelsPending = true;
    setTimeout(() => send({type: 'list_models'}), MODELS_RETRY_MS);
  }
}

function showSelfCheck(rows) {
  const table = $('self-check-table');
  table.tBodies[0].replaceChildren(...rows.map((row) => {
    const tr = document.createElement('tr');
    for (const value of [row.attack, row.epsilon, row.clean_accuracy, row.attacked_accuracy, row.flip_rate]) {
      const td = document.createElement('td');
      td.textContent = typeof value === 'number' ? value.toFixed(3).replace(/\.?0+$/, '') || '0' : value;
      tr.append(td);
    }
    return tr;
  }));
  table.hidden = false;
}

$('switch-model').addEventListener('click', () => {
  const model = $('model-select').value;
  showControlMessage('pending', `switching to ${model}...`);
  send({type: 'switch_model', model});
});

$('run-self-check').addEventListener('click', () => {
  const samples = Number.parseInt($('self-check-samples').value, 10) || 0;
  showControlMessage('pending', `running the self-check on ${samples} samples (this can take a minute)...`);
  send({type: 'self_check', samples});
});

// -- node status --------------------------------------------------------------------------------------

function onStatus(status) {
  const level = $('status-level');
  level.dataset.level = status.level;
  level.textContent = `node ${status.level}: ${status.message}`;
  const values = new Map(status.values);
  const inputRate = status.values.find(([key]) => key.startsWith('input rate'));
  $('status-summary').textContent = [
    `${values.get('processing rate (Hz)')} Hz processed`,
    inputRate ? `${inputRate[1]} Hz in` : null,
    `latency ${formatSeconds(values.get('latency median (s)'))} median, ${formatSeconds(values.get('latency p95 (s)'))} p95`,
    `${values.get('frames skipped (newer frame arrived)')} skipped`,
    `model ${values.get('model')}`,
  ].filter(Boolean).join(' \u00b7 ');
  $('status-table').tBodies[0].replaceChildren(...status.values.map(([key, value]) => {
    const tr = document.createElement('tr');
    const th = document.createElement('th');
    const td = document.createElement('td');
    th.textContent = key;
    td.textContent = value;
    tr.append(th, td);
    return tr;
  }));
}

function formatSeconds(text) {
  const seconds = Number.parseFloat(text);
  return Number.isFinite(seconds) ? `${(seconds * 1000).toFixed(1)} ms` : '?';
}

// -- camera frames --------------------------------------------------------------------------------------

function onImage(buffer) {
  const length = new DataView(buffer).getUint32(0);
  const meta = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
  const url = URL.createObjectURL(new Blob([new Uint8Array(buffer, 4 + length)], {type: 'image/jpeg'}));
  const image = $('camera');
  image.src = url;
  if (view.imageUrl) {
    URL.revokeObjectURL(view.imageUrl);
  }
  view.imageUrl = url;
  view.frames += 1;
  image.dataset.stamp = stampText(meta.stamp);
  image.dataset.frames = String(view.frames);
  $('camera-note').textContent = `${meta.topic} \u00b7 ${meta.width}\u00d7${meta.height} \u00b7 at most ${meta.max_rate} frames/s`;
}

// -- faces: bars, circumplex, traces -------------------------------------------------------------------

function onTraces(message) {
  view.traces = new Map(Object.entries(message.faces));
  view.newestStamp = Math.max(-Infinity, ...[...view.traces.values()].flat().map((point) => point[0]));
}

function onEmotion(result) {
  const stamp = stampSeconds(result.stamp);
  if (stamp < view.newestStamp - view.traceSeconds) {  // a replay started again: new traces
    view.traces.clear();
  }
  view.newestStamp = Math.max(view.newestStamp, stamp);
  for (const face of result.faces) {
    if (!view.traces.has(face.face_id)) {
      view.traces.set(face.face_id, []);
    }
    view.traces.get(face.face_id).push([stamp, face.valence, face.arousal]);
  }
  for (const [faceId, points] of view.traces) {
    while (points.length && points[0][0] < stamp - view.traceSeconds) {
      points.shift();
    }
    if (!points.length) {
      view.traces.delete(faceId);
    }
  }
  view.latest = result;
  view.results += 1;
  if (!view.renderPending) {
    view.renderPending = true;
    requestAnimationFrame(renderFaces);
  }
}

function renderFaces() {
  view.renderPending = false;
  const result = view.latest;
  const container = $('faces');
  const cards = new Map([...container.children].map((card) => [card.dataset.faceId, card]));
  const shown = result.faces.map((face) => {
    const card = cards.get(face.face_id) ?? faceCard(face.face_id);
    updateFaceCard(card, face, stampSeconds(result.stamp));
    return card;
  });
  container.replaceChildren(...shown);
  container.dataset.stamp = stampText(result.stamp);
  container.dataset.results = String(view.results);
  $('faces-note').textContent = result.faces.length ? '' : 'No face in the latest frame.';
  $('faces-model').textContent = result.model ? `model ${result.model}` : '';
}

function svgElement(name, attributes = {}) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) {
    element.setAttribute(key, value);
  }
  return element;
}

function faceCard(faceId) {
  const card = document.createElement('article');
  card.className = 'face';
  card.dataset.faceId = faceId;
  const title = document.createElement('h3');
  for (const part of ['face-id', 'label', 'confidence']) {
    const span = document.createElement('span');
    span.className = part;
    title.append(span, ' ');
  }
  title.querySelector('.face-id').textContent = faceId;
  const bars = document.createElement('div');
  bars.className = 'bars';
  const circumplex = svgElement('svg', {class: 'circumplex', viewBox: '-1.25 -1.25 2.5 2.5', role: 'img',
    'aria-label': 'valence and arousal on the circumplex'});
  circumplex.append(svgElement('circle', {class: 'rim', cx: 0, cy: 0, r: 1}),
    svgElement('line', {class: 'axis', x1: -1, y1: 0, x2: 1, y2: 0}),
    svgElement('line', {class: 'axis', x1: 0, y1: -1, x2: 0, y2: 1}),
    svgElement('g', {class: 'anchors'}),
    svgElement('circle', {class: 'va-point', cx: 0, cy: 0, r: 0.07}));
  const axisNames = [['valence', 1.22, 0.1, 'end'], ['arousal', 0.04, -1.1, 'start']];
  for (const [text, x, y, anchor] of axisNames) {
    const label = svgElement('text', {class: 'axis-name', x, y, 'text-anchor': anchor});
    label.textContent = text;
    circumplex.append(label);
  }
  const trace = svgElement('svg', {class: 'trace', viewBox: `${-view.traceSeconds} -1.1 ${view.traceSeconds} 2.2`,
    preserveAspectRatio: 'none', role: 'img', 'aria-label': `valence and arousal over the last ${view.traceSeconds} s`});
  trace.append(svgElement('line', {class: 'axis', x1: -view.traceSeconds, y1: 0, x2: 0, y2: 0}),
    svgElement('polyline', {class: 'valence', points: ''}), svgElement('polyline', {class: 'arousal', points: ''}));
  const legend = document.createElement('p');
  legend.className = 'legend';
  legend.textContent = `valence (green) and arousal (orange), last ${view.traceSeconds} s`;
  const plots = document.createElement('div');
  plots.className = 'plots';
  plots.append(circumplex, trace);
  card.append(title, bars, plots, legend);
  return card;
}

function updateFaceCard(card, face, stamp) {
  card.querySelector('.label').textContent = face.label;
  card.querySelector('.confidence').textContent = face.confidence.toFixed(2);
  card.dataset.label = face.label;
  const bars = card.querySelector('.bars');
  if (bars.dataset.labels !== face.labels.join(',')) {
    buildBars(card, bars, face.labels);
  }
  face.labels.forEach((label, index) => {
    const probability = face.probabilities[index];
    const row = bars.children[index];
    row.dataset.value = probability.toFixed(4);
    row.classList.toggle('top', label === face.label);
    row.querySelector('.bar-fill').style.width = `${(probability * 100).toFixed(1)}%`;
    row.querySelector('.bar-value').textContent = probability.toFixed(2);
  });
  const point = card.querySelector('.va-point');
  point.setAttribute('cx', face.valence.toFixed(4));
  point.setAttribute('cy', (-face.arousal).toFixed(4));
  point.dataset.valence = face.valence.toFixed(4);
  point.dataset.arousal = face.arousal.toFixed(4);
  const points = view.traces.get(face.face_id) ?? [];
  for (const [index, name] of [[1, 'valence'], [2, 'arousal']]) {
    card.querySelector(`.trace .${name}`).setAttribute('points',
      points.map((p) => `${(p[0] - stamp).toFixed(3)},${(-p[index]).toFixed(3)}`).join(' '));
  }
}

function buildBars(card, bars, labels) {
  bars.dataset.labels = labels.join(',');
  bars.replaceChildren(...labels.map((label) => {
    const row = document.createElement('div');
    row.className = 'bar-row';
    row.dataset.label = label;
    const name = document.createElement('span');
    name.className = 'bar-name';
    name.textContent = label;
    const track = document.createElement('span');
    track.className = 'bar-track';
    const fill = document.createElement('span');
    fill.className = 'bar-fill';
    track.append(fill);
    const value = document.createElement('span');
    value.className = 'bar-value';
    row.append(name, track, value);
    return row;
  }));
  const anchors = card.querySelector('.anchors');
  anchors.replaceChildren(...labels.filter((label) => label in view.circumplex).flatMap((label) => {
    const [valence, arousal] = view.circumplex[label];
    const dot = svgElement('circle', {class: 'anchor', cx: valence, cy: -arousal, r: 0.03});
    const text = svgElement('text', {class: 'anchor-name', x: valence + 0.05, y: -arousal + 0.03});
    text.textContent = label;
    return [dot, text];
  }));
}

connect();
