// Latent view (anywidget): heatmap of the newest completion's latent [T, C] with the playhead.
// `data` arrives as a binary buffer: uint8, frame-major (T rows of C values), mapped to [lo, hi].
// x = frame, y = channel (0 at the bottom); blue < 0 < red.
// The playhead is drawn from the audio widget in the same page (`audio` = its uid, `hop` =
// samples per frame): no kernel message moves it. The view tells the kernel whether it is on
// screen ({type: "visible", visible}), so a hidden view is not sent new latents.

function bytesOf(data) {
  if (!data) return new Uint8Array(0);
  if (data instanceof Uint8Array) return data;
  if (data instanceof DataView || ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return new Uint8Array(data);
}

function paint(model) {
  const T = model.get("frames"), C = model.get("channels");
  const q = bytesOf(model.get("data"));
  if (!T || !C || q.length !== T * C) return null;
  const img = new ImageData(T, C);
  for (let f = 0; f < T; f++) {
    for (let c = 0; c < C; c++) {
      const v = q[f * C + c] / 255 * 2 - 1;        // -1 .. 1
      const o = ((C - 1 - c) * T + f) * 4;
      const a = Math.min(1, Math.abs(v));
      img.data[o] = v > 0 ? 255 : Math.round(255 * (1 - a));
      img.data[o + 1] = Math.round(255 * (1 - a));
      img.data[o + 2] = v < 0 ? 255 : Math.round(255 * (1 - a));
      img.data[o + 3] = 255;
    }
  }
  const off = document.createElement("canvas");
  off.width = T; off.height = C;
  off.getContext("2d").putImageData(img, 0, 0);
  return off;
}

// For tests: window.__demon_views.latent = {draws, completion, frames, channels}.
function registry() {
  window.__demon_views ??= {};
  window.__demon_views.latent ??= { draws: 0, completion: -1, frames: 0, channels: 0 };
  return window.__demon_views.latent;
}

function render({ model, el }) {
  const canvas = document.createElement("canvas");
  canvas.className = "demon-latent-view";
  canvas.style.width = "100%"; canvas.style.height = "160px";
  el.appendChild(canvas);
  let image = null, pending = false, visible = true;
  const audioState = () => window.__demon_audio?.models?.[model.get("audio")];
  const playheadFrame = () => {
    const s = audioState()?.status;
    const hop = model.get("hop");
    return s && hop > 0 ? s.playhead / hop : model.get("playhead");
  };
  const draw = () => {
    const w = canvas.clientWidth || 520, h = canvas.clientHeight || 160;
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== w * dpr) { canvas.width = w * dpr; canvas.height = h * dpr; }
    const g = canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const reg = registry();
    reg.draws += 1; reg.completion = model.get("completion");
    reg.frames = model.get("frames"); reg.channels = model.get("channels");
    if (!image) { g.fillStyle = "#999"; g.font = "12px monospace"; g.fillText("waiting for a completion…", 8, 20); return; }
    g.imageSmoothingEnabled = false;
    g.drawImage(image, 0, 0, w, h - 14);
    const T = model.get("frames");
    const x = (playheadFrame() / Math.max(1, T)) * w;
    g.strokeStyle = "#111"; g.lineWidth = 2;
    g.beginPath(); g.moveTo(x, 0); g.lineTo(x, h - 14); g.stroke();
    g.fillStyle = "#333"; g.font = "11px monospace";
    g.fillText(`completion ${model.get("completion")} · ${T} frames × ${model.get("channels")} ch · ±${model.get("hi").toFixed(2)}`, 4, h - 3);
  };
  let drawnAt = 0;
  const redraw = () => {
    if (pending || !visible) return;
    pending = true;
    drawnAt = performance.now();
    requestAnimationFrame(() => { pending = false; draw(); });
  };
  const onData = () => { image = paint(model); redraw(); };
  model.on("change:data", onData);
  model.on("change:playhead", redraw);
  const audio = audioState();
  // the playhead follows the worklet's reports (10 Hz in the page), redrawn at <= 4 Hz
  const follow = () => { if (performance.now() - drawnAt >= 250) redraw(); };
  audio?.listeners.add(follow);
  const observer = new IntersectionObserver((entries) => {
    const now = entries[entries.length - 1].isIntersecting;
    if (now !== visible) { visible = now; model.send({ type: "visible", visible }); if (visible) redraw(); }
  });
  observer.observe(canvas);
  onData();
  return () => {
    model.off("change:data", onData); model.off("change:playhead", redraw);
    audio?.listeners.delete(follow); observer.disconnect();
  };
}

export default { render };
