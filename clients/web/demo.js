// @ts-check
// Chorus demo page: join a room with a development token, publish the microphone, show who is there and
// who speaks. Query parameters (for people and for automation):
//   ?room=R&name=N     prefill the form
//   &identity=I        token identity (default: derived from the name plus a random suffix)
//   &autojoin=1        join at once
//   &processing=0      turn off echoCancellation / noiseSuppression / autoGainControl
//   &mic=0             join without publishing the microphone
//   &relay=1           relay media through the server's TURN servers only (iceTransportPolicy "relay")
//   &red=0             send plain Opus: do not offer RED (RFC 2198) first
//
// window.chorusDemo exposes the state and test helpers: room, join(), leave(), back(), retry(), setMuted(),
// measure(ms, {freqs}), record(ms), inboundAudioStats(), outboundAudioStats(), snapshot().
//
// A call that fails after joining (e.g. the media server cannot be reached) stays on the call view: the SDK's
// explanation shows next to the state pill and above Retry / Back.

import { connect, sameOriginWsUrl, ChorusError } from './chorus.js';

/** @typedef {import('./chorus.js').Room} Room */
/** @typedef {import('./chorus.js').Participant} Participant */

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const params = new URLSearchParams(location.search);

const els = {
  state: $('conn-state'),
  connDetail: $('conn-detail'),
  joinCard: $('join-card'),
  form: /** @type {HTMLFormElement} */ ($('join-form')),
  roomInput: /** @type {HTMLInputElement} */ ($('room-input')),
  nameInput: /** @type {HTMLInputElement} */ ($('name-input')),
  processingInput: /** @type {HTMLInputElement} */ ($('processing-input')),
  joinButton: /** @type {HTMLButtonElement} */ ($('join-button')),
  roomCard: $('room-card'),
  roomName: $('room-name'),
  roomHint: $('room-hint'),
  participants: $('participants'),
  muteButton: /** @type {HTMLButtonElement} */ ($('mute-button')),
  pttButton: /** @type {HTMLButtonElement} */ ($('ptt-button')),
  leaveButton: /** @type {HTMLButtonElement} */ ($('leave-button')),
  failure: $('failure'),
  failureText: $('failure-text'),
  retryButton: /** @type {HTMLButtonElement} */ ($('retry-button')),
  backButton: /** @type {HTMLButtonElement} */ ($('back-button')),
  error: $('error'),
  audioSink: $('audio-sink'),
};

/**
 * @typedef {object} JoinOptions
 * @property {string} room
 * @property {string} name
 * @property {string} [identity]
 * @property {boolean} [processing]
 * @property {boolean} [microphone]
 */

/**
 * `failed`: the call failed after joining (e.g. the media server could not be reached); the page stays on
 * the call view with the explanation and Retry / Back, and `room` is the failed room until then.
 * @typedef {object} DemoState
 * @property {Room|null} room
 * @property {'idle'|'joining'|'joined'|'left'|'error'|'failed'} status
 * @property {{code: string, message: string}|null} lastError
 * @property {JoinOptions|null} lastJoin   what the last join was asked for (for Retry)
 * @property {string[]} log
 */

/** @type {DemoState} */
const state = { room: null, status: 'idle', lastError: null, lastJoin: null, log: [] };

/** @param {...unknown} args */
function log(...args) {
  const line = `${new Date().toISOString().slice(11, 23)} ${args.map((a) => (typeof a === 'string' ? a
    : JSON.stringify(a))).join(' ')}`;
  state.log.push(line);
  if (state.log.length > 200) state.log.shift();
  console.log('[chorus-demo]', line);
}

// ---------------------------------------------------------------------------------------------------
// Joining and leaving

/**
 * @param {JoinOptions} opts
 * @returns {Promise<Room>}
 */
async function join(opts) {
  if (state.room) throw new Error('already joined');
  state.lastJoin = { ...opts };
  const roomName = opts.room.trim();
  const name = opts.name.trim() || 'guest';
  const identity = opts.identity || `${name.toLowerCase().replace(/[^a-z0-9_.-]+/g, '-').slice(0, 40)}-${
    Math.random().toString(36).slice(2, 8)}`;
  setStatus('joining');
  showError(null);
  showFailure(null);
  setStatePill('connecting');
  els.joinButton.disabled = true;
  try {
    const q = new URLSearchParams({ room: roomName, identity, name });
    const res = await fetch(`/api/dev-token?${q}`);
    if (!res.ok) {
      throw new ChorusError('dev_token', `GET /api/dev-token failed: HTTP ${res.status} ${
        (await res.text()).slice(0, 200)}`);
    }
    const { token } = await res.json();
    // The page is served by the Chorus server itself, so its WebSocket is on the same origin.
    const room = await connect(sameOriginWsUrl(), token, {
      name, room: roomName, audioContainer: els.audioSink,
      iceTransportPolicy: params.get('relay') === '1' ? 'relay' : 'all',
      ...(params.get('red') === '0' ? { red: false } : {}),
    });
    state.room = room;
    wireRoom(room);
    showRoom(room);
    log('joined', { room: roomName, sid: room.localParticipant && room.localParticipant.sid,
      slots: room.slots.length, server: room.serverVersion });
    if (opts.microphone !== false && room.localParticipant && room.localParticipant.canPublish) {
      const constraints = opts.processing === false
        ? { echoCancellation: false, noiseSuppression: false, autoGainControl: false }
        : { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
      try {
        await room.publishMicrophone(constraints);
        log('microphone published', constraints);
      } catch (e) {
        // Stay in the room as a listener.
        const err = /** @type {ChorusError} */ (e);
        log('microphone failed', { code: err.code, message: err.message });
        state.lastError = { code: err.code || 'no_microphone', message: err.message };
        showError(`Microphone unavailable, listening only: ${err.message}`);
      }
    }
    if (room.connectionState === 'failed') return room; // failed while joining: shown by the `closed` handler
    setStatus('joined');
    render();
    return room;
  } catch (e) {
    const err = /** @type {ChorusError} */ (e);
    log('join failed', { code: err.code, message: err.message });
    state.lastError = { code: err.code || 'error', message: err.message };
    setStatus('error');
    showError(`Could not join: ${err.message}${err.code ? ` (${err.code})` : ''}`);
    setStatePill(state.room ? state.room.connectionState : 'failed');
    if (state.room) { await state.room.leave(); state.room = null; }
    showForm();
    throw e;
  } finally {
    els.joinButton.disabled = false;
  }
}

async function leave() {
  const room = state.room;
  if (!room) return;
  if (room.connectionState === 'failed') { back(); return; }
  await room.leave();
  state.room = null;
  setStatus('left');
  showForm();
}

/** @param {boolean} muted */
function setMuted(muted) {
  if (!state.room) return;
  state.room.setMuted(muted);
  renderMute();
}

/** @param {Room} room */
function wireRoom(room) {
  room.on('participants', render);
  room.on('speaking', renderLevels);
  room.on('dominantspeaker', renderLevels);
  room.on('slots', (/** @type {{slots: import('./chorus.js').Slot[]}} */ { slots }) => {
    log('slots', slots.map((s) => `${s.slot}:${s.mid}=${s.sid ?? '-'}`).join(' '));
    render();
  });
  room.on('participantjoined', ({ participant }) => log('participant joined', participant.name, participant.sid));
  room.on('participantleft', ({ participant, reason }) => log('participant left', participant.name, reason));
  room.on('participantmuted', ({ participant, muted, byModerator }) => {
    log('participant muted', participant.name, muted, byModerator ? '(by a moderator)' : '');
    renderMute();
  });
  room.on('participantupdated', ({ participant }) => {
    log('participant updated', participant.name, { deafened: participant.deafened, ptt: participant.ptt });
    renderMute();
  });
  room.on('moved', ({ from, room: info }) => {
    log('moved', `${from} -> ${info.name}`);
    els.roomName.textContent = info.name;
    renderMute();
  });
  room.on('connectionstate', ({ state: s, previous }) => {
    log('connection state', `${previous} -> ${s}`);
    setStatePill(s);
  });
  room.on('mediastate', ({ state: s }) => log('server media state', s));
  room.on('reconnecting', ({ reason, attempt }) => {
    log('reconnecting', { attempt, reason });
    els.roomHint.textContent = `Connection lost (${reason}): reconnecting, attempt ${attempt}…`;
  });
  room.on('reconnected', ({ attempts, downtimeMs, how, iceRestarted }) => {
    // `resumed`: the same session (the others saw nothing); `rejoined`: a new one.
    log('reconnected', { attempts, downtimeMs, how, iceRestarted });
    els.roomHint.textContent = '';
    render();
  });
  room.on('error', ({ code, message, fatal }) => {
    log('error', { code, message, fatal });
    state.lastError = { code, message };
    // A fatal error ends the call: explained next to the state pill and on the call view (see `closed`).
    if (fatal) showFailure(`${message} (${code})`);
    else showError(`${message} (${code})`);
  });
  room.on('autoplayblocked', ({ slot }) => {
    log('autoplay blocked on slot', slot);
    els.roomHint.textContent = 'Your browser blocked audio playback: click anywhere to hear the room.';
    document.addEventListener('click', () => { room.resumeAudio(); els.roomHint.textContent = ''; },
      { once: true });
  });
  room.on('closed', ({ reason }) => {
    log('closed', reason);
    if (state.room !== room) return;
    if (room.connectionState === 'failed') {
      // Stay on the call view with the explanation (from the `error` event) and Retry / Back: the user did
      // not leave, and going back to the form silently would hide what went wrong.
      setStatus('failed');
      setStatePill('failed');
      if (!state.lastError) showFailure(`The call ended: ${reason}`);
      els.participants.textContent = '';
      els.roomHint.textContent = '';
      renderMute();
      return;
    }
    state.room = null;
    if (state.status === 'joined') setStatus('left');
    showForm();
  });
}

// ---------------------------------------------------------------------------------------------------
// Rendering

/** @param {DemoState['status']} s */
function setStatus(s) {
  state.status = s;
  document.body.dataset.status = s;
}

/** @param {string} s */
function setStatePill(s) {
  els.state.dataset.state = s;
  els.state.textContent = s;
}

/**
 * Show (or with null, hide) why the call failed: next to the state pill, and on the call view with Retry
 * and Back instead of Mute and Leave.
 * @param {string|null} message
 */
function showFailure(message) {
  els.connDetail.hidden = !message;
  els.connDetail.textContent = message || '';
  els.failure.hidden = !message;
  els.failureText.textContent = message || '';
  els.muteButton.hidden = !!message;
  els.pttButton.hidden = !!message;
  els.leaveButton.hidden = !!message;
}

/** Leave the failed call's view for the join form. */
function back() {
  if (state.room && state.room.connectionState !== 'failed') return;
  state.room = null;
  showFailure(null);
  setStatus('idle');
  showForm();
}

/** Join again with the options of the failed call. */
async function retry() {
  const opts = state.lastJoin;
  back();
  if (!opts) return undefined;
  return join(opts);
}

/** @param {string|null} message */
function showError(message) {
  els.error.hidden = !message;
  els.error.textContent = message || '';
}

/** @param {Room} room */
function showRoom(room) {
  els.joinCard.hidden = true;
  els.roomCard.hidden = false;
  els.roomName.textContent = room.name || '';
  els.roomHint.textContent = `${room.slots.length} audio slots: you hear the ${room.slots.length} loudest speakers.`;
  renderMute();
}

function showForm() {
  els.roomCard.hidden = true;
  els.joinCard.hidden = false;
  els.participants.textContent = '';
  if (!state.room) setStatePill(state.status === 'error' ? 'failed' : 'closed');
}

function renderMute() {
  const room = state.room;
  const muted = !!room && room.muted;
  const live = !!room && room.connectionState !== 'failed' && room.connectionState !== 'closed';
  els.muteButton.textContent = muted ? 'Unmute' : 'Mute';
  els.muteButton.setAttribute('aria-pressed', String(muted));
  els.muteButton.disabled = !live || !room.localParticipant || !room.localParticipant.canPublish;
  els.muteButton.classList.toggle('active', muted);
  const ptt = !!room && room.ptt;
  els.pttButton.textContent = ptt ? (room.keyIsDown ? 'Talking…' : 'Hold space to talk') : 'Push-to-talk';
  els.pttButton.setAttribute('aria-pressed', String(ptt));
  els.pttButton.disabled = els.muteButton.disabled;
  els.pttButton.classList.toggle('active', ptt);
}

/**
 * Push-to-talk: the space bar is the key (not while typing in a field).
 * @param {KeyboardEvent} ev
 * @param {boolean} down
 */
function onSpace(ev, down) {
  const room = state.room;
  if (ev.code !== 'Space' || !room || !room.ptt) return;
  if (ev.target instanceof HTMLInputElement) return;
  ev.preventDefault();
  if (down) room.keyDown(); else room.keyUp();
  renderMute();
}

/** Rebuild the participant list. */
function render() {
  const room = state.room;
  if (!room) return;
  const list = room.allParticipants();
  els.participants.textContent = '';
  for (const p of list) {
    const li = document.createElement('li');
    li.className = 'participant';
    li.dataset.sid = p.sid;
    const avatar = document.createElement('span');
    avatar.className = 'avatar';
    avatar.textContent = (p.name || '?').slice(0, 1).toUpperCase();
    const who = document.createElement('span');
    who.className = 'who';
    const nm = document.createElement('span');
    nm.className = 'name';
    nm.textContent = p.name;
    who.appendChild(nm);
    const tags = document.createElement('span');
    tags.className = 'tags';
    if (p.isLocal) tags.appendChild(tag('you'));
    if (p.slot !== null) tags.appendChild(tag(`slot ${p.slot}`, 'slot'));
    if (!p.canPublish) tags.appendChild(tag('listener'));
    if (p.muted) tags.appendChild(tag(p.serverMuted ? 'muted by moderator' : 'muted', 'muted'));
    if (p.deafened) tags.appendChild(tag('deafened'));
    if (p.ptt) tags.appendChild(tag('push-to-talk'));
    who.appendChild(tags);
    const meter = document.createElement('span');
    meter.className = 'meter';
    const bar = document.createElement('span');
    bar.className = 'bar';
    meter.appendChild(bar);
    li.append(avatar, who, meter);
    els.participants.appendChild(li);
  }
  renderLevels();
}

/**
 * @param {string} text
 * @param {string} [cls]
 */
function tag(text, cls = '') {
  const t = document.createElement('span');
  t.className = `tag ${cls}`.trim();
  t.textContent = text;
  return t;
}

/** Update the level bars from the participants' last `speakers` levels. */
function renderLevels() {
  const room = state.room;
  if (!room) return;
  for (const p of room.allParticipants()) {
    const li = /** @type {HTMLElement|null} */ (els.participants.querySelector(`li[data-sid="${CSS.escape(p.sid)}"]`));
    if (!li) continue;
    const level = p.muted ? 0 : Math.max(0, Math.min(1, p.level));
    li.classList.toggle('speaking', p.speaking && !p.muted && level > 0);
    li.classList.toggle('dominant', p.sid === room.dominantSpeaker);
    const bar = /** @type {HTMLElement|null} */ (li.querySelector('.bar'));
    if (bar) bar.style.width = `${Math.round(level * 100)}%`;
    li.dataset.level = level.toFixed(3);
  }
}

// ---------------------------------------------------------------------------------------------------
// Test helpers

/** @type {AudioContext|null} */
let audioCtx = null;
const sleep = (/** @type {number} */ ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Analyse the received audio (every slot mixed) for `ms` milliseconds.
 * Returns the averaged spectrum's strongest peaks, the RMS of the mix, and the power within ±bandHz of
 * each requested frequency, in dB relative to a full-scale sine (a sine of peak amplitude A reads
 * 20*log10(A)). `noiseFloorDb` is the median bin's level (per bin, not comparable to band powers).
 * @param {number} [ms]
 * @param {{freqs?: number[], fftSize?: number, bandHz?: number, maxPeaks?: number}} [opts]
 * @returns {Promise<{peaks: {freqHz: number, db: number}[], rms: number, rmsDb: number,
 *   powerAt: Record<string, number>, noiseFloorDb: number, frames: number, sampleRate: number,
 *   binHz: number, tracks: number}>}
 */
async function measure(ms = 1000, opts = {}) {
  const room = state.room;
  if (!room) throw new Error('not joined');
  const fftSize = opts.fftSize || 8192;
  const bandHz = opts.bandHz || 15;
  const freqs = opts.freqs || [440, 660];
  if (!audioCtx) audioCtx = new AudioContext({ sampleRate: 48000 });
  if (audioCtx.state !== 'running') await audioCtx.resume();
  const ctx = audioCtx;
  const analyser = ctx.createAnalyser();
  analyser.fftSize = fftSize;
  analyser.smoothingTimeConstant = 0;
  // A MediaStreamAudioSourceNode only plays the first track of a stream: one source per slot.
  const sources = room.slots.filter((s) => s.stream && s.track && s.track.readyState === 'live')
    .map((s) => ctx.createMediaStreamSource(/** @type {MediaStream} */ (s.stream)));
  for (const src of sources) src.connect(analyser);

  const n = analyser.frequencyBinCount;
  const acc = new Float64Array(n);
  const spec = new Float32Array(n);
  const time = new Float32Array(fftSize);
  let frames = 0;
  let sumSq = 0;
  let samples = 0;
  // Let the graph fill one window before sampling.
  await sleep(Math.ceil((fftSize / ctx.sampleRate) * 1000));
  const t0 = performance.now();
  do {
    analyser.getFloatFrequencyData(spec);
    for (let i = 0; i < n; i++) acc[i] += Number.isFinite(spec[i]) ? 10 ** (spec[i] / 10) : 0;
    analyser.getFloatTimeDomainData(time);
    for (let i = 0; i < fftSize; i++) sumSq += time[i] * time[i];
    samples += fftSize;
    frames++;
    await sleep(100);
  } while (performance.now() - t0 < ms);
  for (const src of sources) src.disconnect();

  const binHz = ctx.sampleRate / fftSize;
  const db = new Float64Array(n);
  for (let i = 0; i < n; i++) db[i] = 10 * Math.log10(acc[i] / frames + 1e-30);
  // Band power sums the bins of a tone's main lobe. The analyser scales by 1/N after a Blackman window,
  // so a sine of peak amplitude A has a band power of A^2/4 * mean(w^2) = A^2 * 0.0762; adding
  // FULL_SCALE_DB makes a full-scale sine 0 dB and an amplitude-A sine 20*log10(A) dB.
  const FULL_SCALE_DB = 11.18;
  /** @param {number} f */
  const bandPower = (f) => {
    const lo = Math.max(1, Math.floor((f - bandHz) / binHz));
    const hi = Math.min(n - 1, Math.ceil((f + bandHz) / binHz));
    let p = 0;
    for (let i = lo; i <= hi; i++) p += acc[i] / frames;
    return 10 * Math.log10(p + 1e-30) + FULL_SCALE_DB;
  };
  /** @type {Record<string, number>} */
  const powerAt = {};
  for (const f of freqs) powerAt[String(f)] = round1(bandPower(f));

  const sorted = Array.from(db.slice(1)).sort((a, b) => a - b);
  const noiseFloorDb = sorted[Math.floor(sorted.length / 2)];
  /** @type {{freqHz: number, db: number}[]} */
  const peaks = [];
  const w = 4;
  for (let i = w + 1; i < n - w; i++) {
    if (db[i] < noiseFloorDb + 20) continue;
    let isMax = true;
    for (let j = i - w; j <= i + w; j++) if (j !== i && db[j] > db[i]) { isMax = false; break; }
    if (!isMax) continue;
    const a = db[i - 1], b = db[i], c = db[i + 1];
    const den = a - 2 * b + c;
    const off = den ? (0.5 * (a - c)) / den : 0;
    peaks.push({ freqHz: round1((i + off) * binHz), db: round1(bandPower((i + off) * binHz)) });
  }
  peaks.sort((x, y) => y.db - x.db);
  const rms = Math.sqrt(sumSq / Math.max(1, samples));
  return {
    peaks: peaks.slice(0, opts.maxPeaks || 12),
    rms: Number(rms.toFixed(5)),
    rmsDb: round1(20 * Math.log10(rms + 1e-12)),
    powerAt,
    noiseFloorDb: round1(noiseFloorDb),
    frames,
    sampleRate: ctx.sampleRate,
    binHz: round1(binHz),
    tracks: sources.length,
  };
}

/** @param {number} x */
function round1(x) { return Math.round(x * 10) / 10; }

/**
 * getStats of the peer connection, as a map by id.
 * @returns {Promise<Map<string, any>>}
 */
async function statsById() {
  const room = state.room;
  /** @type {Map<string, any>} */
  const byId = new Map();
  if (!room || !room.pc) return byId;
  const report = await room.pc.getStats();
  report.forEach((s) => byId.set(s.id, s));
  return byId;
}

/**
 * The peer connection's inbound-rtp audio entries (one per slot).
 * @returns {Promise<object[]>}
 */
async function inboundAudioStats() {
  const byId = await statsById();
  const room = state.room;
  return [...byId.values()].filter((s) => s.type === 'inbound-rtp' && s.kind === 'audio').map((s) => {
    const codec = s.codecId ? byId.get(s.codecId) : null;
    const slot = room ? room.slots.find((x) => x.mid === s.mid) : null;
    return {
      mid: s.mid ?? null,
      slot: slot ? slot.slot : null,
      ssrc: s.ssrc,
      packetsReceived: s.packetsReceived ?? 0,
      bytesReceived: s.bytesReceived ?? 0,
      packetsLost: s.packetsLost ?? 0,
      jitter: s.jitter ?? null,
      audioLevel: s.audioLevel ?? null,
      totalAudioEnergy: s.totalAudioEnergy ?? null,
      totalSamplesReceived: s.totalSamplesReceived ?? null,
      concealedSamples: s.concealedSamples ?? null,
      jitterBufferDelay: s.jitterBufferDelay ?? null,
      jitterBufferEmittedCount: s.jitterBufferEmittedCount ?? null,
      removedSamplesForAcceleration: s.removedSamplesForAcceleration ?? null,
      insertedSamplesForDeceleration: s.insertedSamplesForDeceleration ?? null,
      silentConcealedSamples: s.silentConcealedSamples ?? null,
      concealmentEvents: s.concealmentEvents ?? null,
      jitterBufferTargetDelay: s.jitterBufferTargetDelay ?? null,
      mimeType: codec ? codec.mimeType : null,
      sdpFmtpLine: codec ? codec.sdpFmtpLine : null,
    };
  });
}

/**
 * The peer connection's outbound-rtp audio entries (the microphone).
 * @returns {Promise<object[]>}
 */
async function outboundAudioStats() {
  const byId = await statsById();
  return [...byId.values()].filter((s) => s.type === 'outbound-rtp' && s.kind === 'audio').map((s) => {
    const codec = s.codecId ? byId.get(s.codecId) : null;
    return {
      mid: s.mid ?? null,
      ssrc: s.ssrc,
      packetsSent: s.packetsSent ?? 0,
      bytesSent: s.bytesSent ?? 0,
      mimeType: codec ? codec.mimeType : null,
      sdpFmtpLine: codec ? codec.sdpFmtpLine : null,
    };
  });
}

/** A JSON-able summary of the page's state, for diagnostics. */
function snapshot() {
  const room = state.room;
  return {
    status: state.status,
    lastError: state.lastError,
    view: els.roomCard.hidden ? 'form' : 'call',
    connDetail: els.connDetail.hidden ? null : els.connDetail.textContent,
    connectionState: room ? room.connectionState : null,
    serverMediaState: room ? room.serverMediaState : null,
    pcState: room && room.pc ? room.pc.connectionState : null,
    iceState: room && room.pc ? room.pc.iceConnectionState : null,
    local: room && room.localParticipant ? { ...room.localParticipant } : null,
    participants: room ? [...room.participants.values()].map((p) => ({ ...p })) : [],
    slots: room ? room.slots.map((s) => ({ slot: s.slot, mid: s.mid, sid: s.sid, ssrc: s.ssrc,
      track: s.track ? s.track.readyState : null,
      // in-band: the CSRC of the slot's last packets is the speaker's original SSRC
      csrcs: s.transceiver ? s.transceiver.receiver.getContributingSources().map((c) => c.source) : [] })) : [],
    muted: room ? room.muted : null,
    dominantSpeaker: room ? room.dominantSpeaker : null,
    log: state.log.slice(-40),
  };
}

// ---------------------------------------------------------------------------------------------------
// Page wiring

els.form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  join({
    room: els.roomInput.value,
    name: els.nameInput.value,
    identity: params.get('identity') || undefined,
    processing: els.processingInput.checked,
    microphone: params.get('mic') !== '0',
  }).catch(() => { /* shown on the page */ });
});
els.muteButton.addEventListener('click', () => setMuted(!(state.room && state.room.muted)));
els.pttButton.addEventListener('click', () => {
  if (!state.room) return;
  state.room.setPtt(!state.room.ptt);
  renderMute();
});
window.addEventListener('keydown', (ev) => onSpace(ev, true));
window.addEventListener('keyup', (ev) => onSpace(ev, false));
els.leaveButton.addEventListener('click', () => { leave(); });
els.backButton.addEventListener('click', () => back());
els.retryButton.addEventListener('click', () => { retry().catch(() => { /* shown on the page */ }); });
window.addEventListener('pagehide', () => { if (state.room) state.room.leave(); });

if (params.get('room')) els.roomInput.value = /** @type {string} */ (params.get('room'));
if (params.get('name')) els.nameInput.value = /** @type {string} */ (params.get('name'));
if (params.get('processing') === '0') els.processingInput.checked = false;
setStatus('idle');

/**
 * Record what the participant receives (every slot mixed) for `ms` milliseconds, as 48 kHz mono 16-bit PCM,
 * base64-encoded: for tests that score the received audio (e.g. speech quality). An AudioWorklet collects
 * every sample the graph renders, so nothing is lost between polls.
 * @param {number} ms
 * @returns {Promise<{sampleRate: number, samples: number, pcm16: string}>}
 */
async function record(ms) {
  const room = state.room;
  if (!room) throw new Error('not joined');
  if (!audioCtx) audioCtx = new AudioContext({ sampleRate: 48000 });
  if (audioCtx.state !== 'running') await audioCtx.resume();
  const ctx = audioCtx;
  const source = `class Recorder extends AudioWorkletProcessor {
    constructor() { super(); this.port.onmessage = () => this.port.postMessage('done'); }
    process(inputs) {
      const ch = inputs[0] && inputs[0][0];
      this.port.postMessage(ch ? ch.slice() : new Float32Array(128));
      return true;
    }
  }
  registerProcessor('chorus-recorder', Recorder);`;
  if (!(/** @type {any} */ (ctx)).chorusRecorder) {
    const url = URL.createObjectURL(new Blob([source], { type: 'application/javascript' }));
    await ctx.audioWorklet.addModule(url);
    (/** @type {any} */ (ctx)).chorusRecorder = true;
  }
  const node = new AudioWorkletNode(ctx, 'chorus-recorder', { numberOfInputs: 1, numberOfOutputs: 0, channelCount: 1, channelCountMode: 'explicit' });
  const sources = room.slots.filter((s) => s.stream && s.track && s.track.readyState === 'live')
    .map((s) => ctx.createMediaStreamSource(/** @type {MediaStream} */ (s.stream)));
  for (const src of sources) src.connect(node);
  const want = Math.round((ms / 1000) * ctx.sampleRate);
  const pcm = new Int16Array(want);
  let have = 0;
  await new Promise((resolve) => {
    node.port.onmessage = (e) => {
      if (!(e.data instanceof Float32Array)) return;
      const n = Math.min(e.data.length, want - have);
      for (let i = 0; i < n; i++) pcm[have + i] = Math.max(-32768, Math.min(32767, Math.round(e.data[i] * 32767)));
      have += n;
      if (have >= want) resolve(undefined);
    };
  });
  for (const src of sources) src.disconnect();
  node.port.onmessage = null;
  node.disconnect();
  let binary = '';
  const bytes = new Uint8Array(pcm.buffer);
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return { sampleRate: ctx.sampleRate, samples: have, pcm16: btoa(binary) };
}

const chorusDemo = {
  get room() { return state.room; },
  get status() { return state.status; },
  get lastError() { return state.lastError; },
  get log() { return state.log; },
  join,
  leave,
  back,
  retry,
  setMuted,
  measure,
  record,
  inboundAudioStats,
  outboundAudioStats,
  snapshot,
};
/** @type {any} */ (window).chorusDemo = chorusDemo;

if (params.get('autojoin') === '1') {
  if (!els.nameInput.value) els.nameInput.value = `guest-${Math.random().toString(36).slice(2, 6)}`;
  els.form.requestSubmit();
}
