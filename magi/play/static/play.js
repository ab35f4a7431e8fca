// magi play: the page side of the protocol documented in magi/play/server.py.
// Held keys go to the server as {"type": "keys"} on every change; frames come back as binary
// messages (a 12-byte header, then raw pixels) and are drawn on 64x64 canvases that CSS scales up
// with nearest-neighbour. `window.magiPlay` exposes counters for tests and curious players.
// Keys are tracked by physical key (event.code): holding ArrowUp and tapping W keeps "up" held.
"use strict";

(() => {
  const KEYMAP = {
    ArrowUp: "up", KeyW: "up", ArrowDown: "down", KeyS: "down",
    ArrowLeft: "left", KeyA: "left", ArrowRight: "right", KeyD: "right", Space: "fire",
  };
  const HEADER_BYTES = 12; // <BBHHhI: kind, channels, height, width, action, frame index
  const MODEL = 0, REALITY = 1;

  const state = window.magiPlay = {
    connected: false, busy: false, closed: null, hello: null, stats: null, errors: [],
    frames: 0, realityFrames: 0, keyMessages: 0, resets: 0, idle: null, realityOverAt: null,
    keys: [], codes: [], lastAction: null, lastActionName: null, lastFrame: -1, fps: null, fpsSpanMs: 0,
    seed: null,
  };
  const FPS_WINDOW_MS = 1000; // the readout is a rate over at least this long, never over two frames
  const $ = (id) => document.getElementById(id);
  const canvases = { [MODEL]: $("model"), [REALITY]: $("reality-canvas") };
  const held = new Set(); // physical keys (event.code) now down
  const arrivals = []; // receive times of model frames: the newest one >= FPS_WINDOW_MS old, and after it

  const socket = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
  socket.binaryType = "arraybuffer";

  function send(message) {
    if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  }

  function status(text, bad) {
    const el = $("status");
    el.textContent = text;
    el.classList.toggle("bad", !!bad);
  }

  function draw(kind, data) {
    const view = new DataView(data);
    const channels = view.getUint8(1), height = view.getUint16(2, true), width = view.getUint16(4, true);
    const action = view.getInt16(6, true), index = view.getUint32(8, true);
    const pixels = new Uint8Array(data, HEADER_BYTES);
    const canvas = canvases[kind];
    if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
    const ctx = canvas.getContext("2d");
    const image = ctx.createImageData(width, height);
    const rgba = image.data;
    for (let p = 0, q = 0; p < width * height; p++, q += channels) { // (H, W, c) -> RGBA
      rgba[4 * p] = pixels[q];
      rgba[4 * p + 1] = pixels[q + (channels === 3 ? 1 : 0)];
      rgba[4 * p + 2] = pixels[q + (channels === 3 ? 2 : 0)];
      rgba[4 * p + 3] = 255;
    }
    ctx.putImageData(image, 0, 0);
    return { action, index };
  }

  function onFrame(data) {
    const kind = new DataView(data).getUint8(0);
    const { action, index } = draw(kind, data);
    if (kind === REALITY) { state.realityFrames++; return; }
    state.frames++;
    state.lastFrame = index;
    state.lastAction = action;
    const names = state.hello ? state.hello.actions : [];
    state.lastActionName = action >= 0 ? names[action] : "none";
    const now = performance.now();
    arrivals.push(now);
    while (arrivals.length > 2 && now - arrivals[1] >= FPS_WINDOW_MS) arrivals.shift();
    state.fpsSpanMs = now - arrivals[0];
    state.fps = state.fpsSpanMs >= FPS_WINDOW_MS ? (arrivals.length - 1) * 1000 / state.fpsSpanMs : null;
    $("fps").textContent = state.fps === null ? "–" : state.fps.toFixed(1);
    $("frame").textContent = index;
    $("action").textContent = state.lastActionName;
  }

  function onText(message) {
    if (message.type === "hello") {
      state.hello = message;
      state.seed = message.seed;
      const s = message.setting;
      $("game").textContent = "· " + message.game;
      $("setting").textContent = `${s.sampler.toUpperCase()}, ${s.mask_steps} mask × ${s.diffusion_steps} ` +
        `diffusion steps${s.threads ? `, ${s.threads} thread${s.threads > 1 ? "s" : ""}` : ""}` +
        `${s.engine ? `, ${s.engine === "onnx" ? "onnxruntime" : "PyTorch"}${s.compiled ? " (compiled)" : ""}` : ""}`;
      $("seed").textContent = message.seed;
      $("sees").textContent = message.sees.text;
      $("model-caption").textContent = `world model (${message.sees.colour}, as its VAE sees it)`;
      status(`playing ${message.game} (model ${message.model}); ${message.fps_cap} frames/s at most`);
    } else if (message.type === "stats") {
      state.stats = message;
      $("latency").textContent = message.latency_ms.toFixed(1) + " ms/frame";
      $("seed").textContent = message.seed;
      realityOver(message.reality_over ? message.reality_over_at : null);
    } else if (message.type === "reset") {
      state.resets++;
      state.seed = message.seed;
      $("seed").textContent = message.seed;
    } else if (message.type === "idle") {
      state.idle = message.seconds;
      status(`closed: no key pressed for ${message.seconds} s, so the slot went to the next player; ` +
        "reload the page to play again", true);
    } else if (message.type === "busy") {
      state.busy = true;
      status(`busy: ${message.max_sessions} player(s) already; try again later`, true);
    } else if (message.type === "error") {
      state.errors.push(message.error);
      status("server: " + message.error, true);
    }
  }

  function realityOver(frame) { // the emulator's episode ended at `frame` (null: it runs)
    if (frame === state.realityOverAt) return;
    state.realityOverAt = frame;
    $("reality-pane").classList.toggle("over", frame !== null);
    $("reality-caption").textContent = frame === null ? "reality (the emulator, same keys)"
      : `reality: the episode ended at frame ${frame}; the model plays on. Reset starts a new episode.`;
  }

  socket.addEventListener("open", () => { state.connected = true; status("connected"); });
  socket.addEventListener("close", (event) => {
    state.connected = false;
    state.closed = event.code;
    if (!state.busy && state.idle === null) status(`disconnected (${event.code}); reload the page to play again`, true);
  });
  socket.addEventListener("message", (event) => {
    if (event.data instanceof ArrayBuffer) onFrame(event.data);
    else onText(JSON.parse(event.data));
  });

  function heldKeys() { return [...new Set([...held].map((code) => KEYMAP[code]))].sort(); }

  function update() { // send the held game keys when they change
    state.codes = [...held].sort();
    const keys = heldKeys();
    if (keys.join() === state.keys.join()) return;
    state.keys = keys;
    state.keyMessages++;
    send({ type: "keys", keys });
    for (const el of document.querySelectorAll("kbd[data-key]")) el.classList.toggle("held", keys.includes(el.dataset.key));
  }

  document.addEventListener("keydown", (event) => {
    if (!KEYMAP[event.code]) return;
    event.preventDefault(); // no page scrolling on arrows and space
    held.add(event.code);
    update();
  });
  document.addEventListener("keyup", (event) => {
    if (!KEYMAP[event.code]) return;
    event.preventDefault();
    held.delete(event.code);
    update();
  });
  window.addEventListener("blur", () => { held.clear(); update(); });

  $("reality").checked = false; // the server starts with the pane off; browsers may restore the box
  $("reset").addEventListener("click", (event) => { send({ type: "reset" }); event.target.blur(); });
  $("reality").addEventListener("change", (event) => {
    $("reality-pane").hidden = !event.target.checked;
    send({ type: "reality", on: event.target.checked });
    event.target.blur(); // keep Space for the game, not the checkbox
  });
})();
