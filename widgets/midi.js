// MIDI in (anywidget): Web MIDI -> the raw bytes of every message to the kernel
// ({type: "midi", data: [status, d1, d2], device}) and which devices the browser sees
// ({type: "state", available, devices | error}). The kernel maps, coalesces and slews
// (demon_nb/live/midi.py) and sets `status`, the line shown here.
// For tests: window.__demon_midi = {sent, state}.

export default {
  async render({ model, el }) {
    const line = document.createElement("div");
    line.className = "demon-midi-status";
    line.style.cssText = "font: 12px monospace; color: #444; padding: 2px 4px";
    el.appendChild(line);
    const show = () => { line.textContent = model.get("status"); };
    model.on("change:status", show);
    show();
    const reg = (window.__demon_midi ??= { sent: 0, state: null });
    const tell = (state) => { reg.state = state; model.send({ type: "state", ...state }); };
    if (!navigator.requestMIDIAccess) {
      tell({ available: false, error: "this browser has no Web MIDI (Safari, or an insecure page): on-screen controls only" });
      return;
    }
    let access;
    try {
      access = await navigator.requestMIDIAccess();
    } catch (err) {
      tell({ available: false, error: `permission denied (${err && err.name ? err.name : err}): on-screen controls only` });
      return;
    }
    const attach = () => {
      const devices = [];
      for (const input of access.inputs.values()) {
        devices.push(input.name || "MIDI input");
        input.onmidimessage = (event) => {
          reg.sent += 1;
          model.send({ type: "midi", data: Array.from(event.data), device: input.name || "MIDI input" });
        };
      }
      tell({ available: true, devices });
    };
    access.onstatechange = attach;
    attach();
  },
};
