// Audio out widget (anywidget): one AudioContext + AudioWorklet loop buffer per
// widget *model* (built in `initialize`, shared by all views of the model).
//
// Handshake: after the worklet is loaded the front end sends {type: "ready"} so
// the kernel never sends a patch into the void; a page reload builds a new
// context and says "ready" again.
// Kernel -> browser: {type: "patch", start, samples, channels, dtype, fade,
//   versions, id} + one binary buffer, channel-planar PCM [channels, samples]
//   as float32 or int16; or the same bytes as base64 text in `b64` and no buffer.
//   {type: "probe", nonce, b64} + a buffer holding the bytes of `b64`.
// Transport contract (Colab drops the buffers of custom messages): "ready" says
//   `probe: true`; the kernel answers with a probe and the browser replies
//   {type: "probe", nonce, binary} (did the buffer arrive intact). After
//   `binary: false` the kernel resends the patches sent meanwhile as base64, so a
//   patch whose buffer is missing is dropped (counted) unless buffers are known
//   to work.
// Browser -> kernel: {type: "ready", probe: true}, {type: "ack", id} per applied patch that
//   asked for one (`ack: true`; the kernel samples about one a second for its round-trip
//   estimate: every message to the kernel costs it a busy/idle status pair, and the page a redraw),
//   {type: "status", ...} (playhead, fill, silent samples, rms/peak, heard versions
//   with the epoch time they were heard) every REPORT_MS, or after a quarter of it when a
//   heard version or the play state changed: the worklet reports 10 times a second
//   in the page (views, tests), the kernel only needs what changed and a playhead
//   now and then (it extrapolates between reports).
// Patches may arrive before "ready" (the kernel streams from the start; its ready
//   handler can wait behind queued cells): they are applied as soon as the worklet runs.
// In the page, `status.heard_log` lists every advance of a heard version since the last
//   report, [name, version, epoch s] (a version overtaken within one report included).
// For tests the state of every model is on window.__demon_audio; its
// `readLoop()` resolves to a copy of the worklet's loop ({data, filled}).

const REPORT_MS = 1000;

// Did anything the kernel acts on change between two worklet reports?
function changed(prev, next) {
  if (!prev || prev.playing !== next.playing) return true;
  const a = prev.heard || {}, b = next.heard || {};
  const keys = Object.keys(b);
  return keys.length !== Object.keys(a).length || keys.some((k) => a[k] !== b[k]);
}

function registry() {
  window.__demon_audio ??= { models: {}, latest: null };
  return window.__demon_audio;
}

// The bytes of a message buffer (ArrayBuffer or a view of one), or null.
function bytesOf(buffer) {
  if (ArrayBuffer.isView(buffer)) return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  return buffer instanceof ArrayBuffer ? new Uint8Array(buffer) : null;
}

function fromBase64(text) {
  const bin = atob(text);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

function sameBytes(a, b) {
  return !!a && a.length === b.length && a.every((v, i) => v === b[i]);
}

function toChannels(bytes, dtype, channels, samples) {
  const aligned = bytes.slice().buffer;                // copy: alignment + ownership
  const int16 = dtype === "int16";
  const flat = int16 ? new Int16Array(aligned) : new Float32Array(aligned);
  if (flat.length !== channels * samples) {
    throw new Error(`patch has ${flat.length} values, expected ${channels} x ${samples}`);
  }
  const scale = int16 ? 1 / 32767 : 1;   // the kernel encodes round(x * 32767)
  return Array.from({ length: channels }, (_, c) => {
    const ch = new Float32Array(samples);
    for (let i = 0; i < samples; i++) ch[i] = flat[c * samples + i] * scale;
    return ch;
  });
}

// Epoch seconds at which audio-context time `t` reaches the speakers.
function epochOf(ctx, t) {
  const ts = ctx.getOutputTimestamp ? ctx.getOutputTimestamp() : null;
  if (ts && ts.performanceTime > 0) {
    return (performance.timeOrigin + ts.performanceTime) / 1000 + (t - ts.contextTime);
  }
  const latency = (ctx.baseLatency || 0) + (ctx.outputLatency || 0);
  return Date.now() / 1000 - (ctx.currentTime - t) + latency;
}

function initialize({ model, signal }) {
  const reg = registry();
  const sampleRate = model.get("sample_rate");
  const channels = model.get("channels");
  const loopSamples = model.get("loop_samples");
  // "lowest" = latencyHint 0: the smallest output buffer the browser offers (an instrument);
  // "interactive" / "balanced" / "playback" where a machine crackles with it
  const hint = model.get("latency_hint");
  const ctx = new AudioContext({ sampleRate, latencyHint: hint === "lowest" || !hint ? 0 : hint });
  const state = {
    ctx, ready: false, error: "", sampleRate: ctx.sampleRate, patchesReceived: 0,
    acks: 0, applied: 0, status: null, listeners: new Set(),
    binary: null, base64Received: 0, dropped: 0,          // transport: probe result, counts
  };
  const id = model.get("_uid");
  reg.models[id] = state;
  reg.latest = state;
  let node = null;
  const pending = [];                                   // patches that beat the worklet

  const notify = () => state.listeners.forEach((fn) => fn(state));
  const fail = (err) => {
    state.error = String(err && err.message ? err.message : err);
    model.send({ type: "error", message: state.error });
    notify();
  };
  const post = (msg, transfer) => (node ? node.port.postMessage(msg, transfer || []) : pending.push([msg, transfer]));
  const reads = [];                                     // readLoop() promises (tests)
  let sent = null, sentAt = 0;                           // the last status sent to the kernel
  const toAck = new Set();                               // ids of applied patches the kernel asked to ack
  state.readLoop = () => new Promise((resolve) => { reads.push(resolve); post({ type: "read" }); });

  const onWorklet = (e) => {
    const m = e.data;
    if (m.type === "loop") reads.shift()?.(m);
    else if (m.type === "applied") {
      state.applied++;
      if (!toAck.delete(m.id)) return;
      state.acks++;
      model.send({ type: "ack", id: m.id });
    } else if (m.type === "status") {
      const heard = {}, heardCtx = {}, heardAt = {};
      for (const [name, [v, t]] of Object.entries(m.heard)) {
        heard[name] = v; heardCtx[name] = t; heardAt[name] = epochOf(ctx, t);
      }
      // every advance of a heard version since the last report, with its epoch time (page listeners)
      const heardLog = (m.advances || []).map(([name, v, t]) => [name, v, epochOf(ctx, t)]);
      const { advances, ...rest } = m;
      const status = { ...rest, heard, heard_ctx: heardCtx, heard_at: heardAt, state: ctx.state, epoch: Date.now() / 1000,
                       output_latency: (ctx.baseLatency || 0) + (ctx.outputLatency || 0) };
      state.status = { ...status, heard_log: heardLog };
      const now = performance.now();
      if (now - sentAt >= REPORT_MS || (changed(sent, status) && now - sentAt >= REPORT_MS / 4)) {
        model.send({ type: "status", ...status });
        sent = status; sentAt = now;
        state.reportsSent = (state.reportsSent || 0) + 1;
      }
      notify();
    }
  };

  const onMsg = (msg, buffers) => {
    if (msg?.type === "probe") {
      state.binary = sameBytes(bytesOf(buffers?.[0]), fromBase64(msg.b64));
      model.send({ type: "probe", nonce: msg.nonce, binary: state.binary });
      return;
    }
    if (msg?.type !== "patch") return;
    try {
      const bytes = msg.b64 !== undefined ? fromBase64(msg.b64) : bytesOf(buffers?.[0]);
      const size = msg.channels * msg.samples * (msg.dtype === "int16" ? 2 : 4);
      if (msg.b64 === undefined && bytes?.length !== size && state.binary !== true) {
        state.dropped++;                               // buffer lost: the kernel resends it as base64
        return;
      }
      const data = toChannels(bytes ?? new Uint8Array(0), msg.dtype, msg.channels, msg.samples);
      state.patchesReceived++;
      if (msg.b64 !== undefined) state.base64Received++;
      if (msg.ack !== false) toAck.add(msg.id);         // an older kernel sends no `ack`: ack all
      post({ type: "patch", start: msg.start, data, fade: msg.fade, versions: msg.versions, id: msg.id },
        data.map((ch) => ch.buffer));
    } catch (err) {
      fail(err);
    }
  };
  model.on("msg:custom", onMsg);

  const setPlaying = () => {
    const playing = model.get("playing");
    if (playing && ctx.state !== "running") ctx.resume().catch(fail);
    post({ type: "play", playing });
    notify();
  };
  const setVolume = () => post({ type: "volume", volume: model.get("volume") });
  model.on("change:playing", setPlaying);
  model.on("change:volume", setVolume);
  ctx.onstatechange = notify;

  const url = URL.createObjectURL(new Blob([model.get("_worklet")], { type: "text/javascript" }));
  ctx.audioWorklet.addModule(url).then(() => {
    if (signal?.aborted) return;
    node = new AudioWorkletNode(ctx, "demon-loop", {
      numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [channels],
      processorOptions: { loopSamples, channels, playing: model.get("playing"), volume: model.get("volume") },
    });
    node.port.onmessage = onWorklet;
    node.connect(ctx.destination);
    for (const [msg, transfer] of pending.splice(0)) node.port.postMessage(msg, transfer || []);
    if (model.get("playing")) ctx.resume().catch(() => {});
    // Browsers keep a context made before any user gesture suspended (a page with no cell to run,
    // e.g. the performance page): the first click or key anywhere starts the sound.
    const wake = () => {
      if (model.get("playing") && ctx.state === "suspended") ctx.resume().catch(() => {});
      if (ctx.state === "running" || signal?.aborted) {
        window.removeEventListener("pointerdown", wake, true);
        window.removeEventListener("keydown", wake, true);
      }
    };
    window.addEventListener("pointerdown", wake, true);
    window.addEventListener("keydown", wake, true);
    state.ready = true;
    model.send({ type: "ready", sample_rate: ctx.sampleRate, loop_samples: loopSamples, channels, probe: true });
    notify();
  }).catch(fail);

  signal?.addEventListener("abort", () => {
    model.off("msg:custom", onMsg);
    model.off("change:playing", setPlaying);
    model.off("change:volume", setVolume);
    node?.disconnect();
    ctx.close();
    URL.revokeObjectURL(url);
    if (reg.models[id] === state) delete reg.models[id];
    if (reg.latest === state) reg.latest = null;
  });
}

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "demon-audio-out";
  root.style.cssText = "display:flex;gap:0.6em;align-items:center;font:12px monospace;padding:4px";
  const button = document.createElement("button");
  button.className = "demon-audio-play";
  const volume = document.createElement("input");
  Object.assign(volume, { type: "range", min: 0, max: 1, step: 0.01, className: "demon-audio-volume" });
  volume.title = "volume";
  const info = document.createElement("span");
  info.className = "demon-audio-status";
  root.append(button, volume, info);
  el.appendChild(root);

  const sync = () => {
    button.textContent = model.get("playing") ? "❚❚ pause" : "▶ play";
    volume.value = model.get("volume");
  };
  button.addEventListener("click", () => {
    const state = registry().models[model.get("_uid")];
    if (state && state.ctx.state !== "running" && model.get("playing")) {
      state.ctx.resume();  // playing but not yet allowed to sound: this click starts it, it does not pause
      return;
    }
    model.set("playing", !model.get("playing"));
    model.save_changes();
  });
  volume.addEventListener("input", () => {
    model.set("volume", Number(volume.value));
    model.save_changes();
  });
  let last = 0;
  // What a listener needs: playing or not, where in the loop, and only what went wrong.
  const show = (state) => {
    const now = performance.now();
    if (now - last < 500) return;                      // the line refreshes at <= 2 Hz
    last = now;
    const s = state.status;
    const sr = state.sampleRate;
    const loop = (model.get("loop_samples") / sr).toFixed(1);
    if (state.error) info.textContent = `error: ${state.error}`;
    else if (state.ctx.state === "suspended" && model.get("playing")) info.textContent = "click anywhere to start the sound";
    else if (!s || s.filled === 0) info.textContent = model.get("playing") ? "starting…" : "paused";
    else {
      const where = `${(s.playhead / sr).toFixed(1)} s / ${loop} s`;
      const parts = [s.playing ? "playing" : "paused", where];
      if (s.filled < 0.999) parts.push(`loading ${(100 * s.filled).toFixed(0)}%`);
      if (s.gaps > 0) parts.push(`audio glitches ${(s.gaps / sr).toFixed(2)} s`);
      info.textContent = parts.join(" · ");
    }
  };
  model.on("change:playing", sync);
  model.on("change:volume", sync);
  sync();
  const state = registry().models[model.get("_uid")];
  if (state) { state.listeners.add(show); show(state); }
  return () => {
    model.off("change:playing", sync);
    model.off("change:volume", sync);
    state?.listeners.delete(show);
  };
}

export default { initialize, render };
