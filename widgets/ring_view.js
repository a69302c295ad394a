// Ring view (anywidget): the D slots of the ring, each with its step and noise level t.
// One row per slot: S cells (filled = steps done, outlined = the next step), coloured by t
// (dark = noise, light = almost clean). Redrawn when the kernel updates `slots` (<= 10 Hz).

function color(t) {
  const l = Math.round(25 + 60 * (1 - Math.max(0, Math.min(1, t))));
  return `hsl(210, 70%, ${l}%)`;
}

// For tests: window.__demon_views.ring = {draws, slots} (the audio widget's convention: window.__demon_*).
function registry() {
  window.__demon_views ??= {};
  window.__demon_views.ring ??= { draws: 0, slots: [] };
  return window.__demon_views.ring;
}

function draw(canvas, model) {
  const slots = model.get("slots") || [];
  const reg = registry();
  reg.draws += 1; reg.slots = slots;
  const rowH = 22, left = 58, right = 120, top = 20;
  const width = canvas.clientWidth || 520;
  const height = top + rowH * Math.max(1, slots.length) + 6;
  const dpr = window.devicePixelRatio || 1;
  canvas.width = width * dpr; canvas.height = height * dpr; canvas.style.height = `${height}px`;
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, width, height);
  g.font = "11px monospace"; g.fillStyle = "#333";
  g.fillText(`tick ${model.get("tick")} · completions ${model.get("completions")}`, 4, 13);
  slots.forEach((s, i) => {
    const y = top + i * rowH;
    g.fillStyle = "#333";
    g.fillText(`slot ${i}`, 4, y + 14);
    if (!s) {
      g.fillStyle = "#999"; g.fillText("empty", left, y + 14); return;
    }
    const cellW = (width - left - right) / s.steps;
    for (let k = 0; k < s.steps; k++) {
      const x = left + k * cellW;
      if (k < s.step) { g.fillStyle = color(1 - (k + 1) / s.steps); g.fillRect(x + 1, y + 3, cellW - 2, rowH - 6); }
      g.strokeStyle = k === s.step ? "#d62728" : "#bbb";
      g.setLineDash(s.draining ? [3, 2] : []);
      g.strokeRect(x + 1, y + 3, cellW - 2, rowH - 6);
    }
    g.setLineDash([]);
    g.fillStyle = color(s.t); g.fillRect(width - right + 6, y + 3, 12, rowH - 6);
    g.fillStyle = "#333";
    g.fillText(`${s.step}/${s.steps} t=${s.t.toFixed(3)}${s.draining ? " drain" : ""}`, width - right + 22, y + 14);
  });
}

function render({ model, el }) {
  const canvas = document.createElement("canvas");
  canvas.className = "demon-ring-view";
  canvas.style.width = "100%";
  el.appendChild(canvas);
  let pending = false;
  const redraw = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; draw(canvas, model); });
  };
  model.on("change:slots", redraw);
  model.on("change:tick", redraw);
  redraw();
  return () => { model.off("change:slots", redraw); model.off("change:tick", redraw); };
}

export default { render };
