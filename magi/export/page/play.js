// The world model in the page (docs/export.md): the graphs of `magi export web` in onnxruntime-web, no server.
// Per frame, as magi.play.engine.OnnxEngine does in Python: context.onnx on the window's frames (before
// the key is read), the key, frame.onnx with fresh noise, decoder.onnx, draw. Everything is fetched from
// this folder. Query parameters: seed=N (deterministic noise: the PRNG below, mirrored in Python by
// magi.export.web.page_noise), script=a,b,c (actions instead of keys, cycled, one per generated frame),
// opening=i, threads=n, fps=f (0: as fast as it goes), record=n (keep the first n frames for a test),
// ep=wasm (never WebGPU).
const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const state = window.magiWeb = {
  ready: false, error: null, runtime: null, threads: 0, isolated: self.crossOriginIsolated === true,
  frames: 0, intervals: [], steps: [], lastAction: null, lastActionName: null, keys: [], fps: null,
  recorded: [], opening: null, seed: null,
};

function fail(message) {
  state.error = message;
  const s = $("status");
  s.textContent = `Cannot run the model: ${message}`;
  s.className = "status error";
}

function mulberry32(seed) { // uniform [0, 1) from a 32-bit state; magi.export.web.Mulberry32 is the same
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gaussian(uniform) { // Box-Muller, one value per two uniforms
  const u1 = 1 - uniform(), u2 = uniform();
  return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
}

async function fetchBytes(file) {
  let response;
  try {
    response = await fetch(file);
  } catch (e) {
    throw new Error(`${file}: could not be fetched (${e.message})`);
  }
  if (!response.ok) throw new Error(`${file}: HTTP ${response.status} (is the whole folder served?)`);
  return new Uint8Array(await response.arrayBuffer());
}

async function chooseRuntime() {
  if (params.get("ep") !== "wasm" && navigator.gpu) {
    try {
      if (await navigator.gpu.requestAdapter()) return "webgpu";
    } catch (e) { /* no adapter: WASM */ }
  }
  return "wasm";
}

async function main() {
  if (typeof WebAssembly !== "object") {
    fail("this browser has no WebAssembly, which onnxruntime-web needs to run the model.");
    return;
  }
  const m = JSON.parse(new TextDecoder().decode(await fetchBytes("manifest.json")));
  $("game").textContent = `${m.game} world model`;
  $("sees").textContent = m.sees ? m.sees.text : "";
  const runtime = await chooseRuntime();
  const ort = await import(runtime === "webgpu" ? "./ort/ort.webgpu.min.mjs" : "./ort/ort.wasm.min.mjs");
  ort.env.wasm.wasmPaths = new URL("ort/", location.href).href;
  const cores = navigator.hardwareConcurrency || 1;
  const asked = parseInt(params.get("threads") || "0", 10);
  state.threads = state.isolated ? Math.max(1, Math.min(asked || Math.min(cores, 4), cores)) : 1;
  ort.env.wasm.numThreads = state.threads;
  state.runtime = runtime;
  const describe = runtime === "webgpu" ? "WebGPU" :
    `WebAssembly (SIMD), ${state.threads} thread${state.threads > 1 ? "s" : ""}` +
    (state.isolated ? "" : " — the page is not cross-origin isolated, so one thread (serve it with `magi serve-web`)");
  $("runtime").textContent = describe;
  $("status").textContent = `Loading the model (${Object.values(m.graphs).map((g) => (g.bytes / 1e6).toFixed(1)).join(" + ")} MB)…`;

  const sessions = {};
  for (const [name, g] of Object.entries(m.graphs)) {
    const bytes = await fetchBytes(g.file);
    const options = { executionProviders: [runtime], graphOptimizationLevel: "all" };
    try {
      sessions[name] = await ort.InferenceSession.create(bytes, options);
    } catch (e) {
      throw new Error(`${g.file}: onnxruntime-web could not load it on ${runtime} (${e.message || e}); ` +
                      "the device may lack the memory, or the browser the features, it needs");
    }
  }
  const [C, h, w] = m.latent, F = C * h * w;
  const [H, Wd] = m.frame_size;
  const W = m.setting.window, k = m.opening_frames, S = m.setting.mask_steps;
  const N = m.tokens_per_frame, P = m.token_dim, temperature = m.setting.temperature;
  const useRank = "rank" in m.graphs.frame.inputs;
  const table = new Map(m.key_table.map((e) => [e.keys.join("+"), e.action]));
  const canvas = $("screen"), ctx2d = canvas.getContext("2d");
  canvas.width = Wd; canvas.height = H;
  const image = ctx2d.createImageData(Wd, H);
  const script = params.get("script") ? params.get("script").split(",").map((x) => parseInt(x, 10)) : null;
  const record = parseInt(params.get("record") || "0", 10);
  const fpsCap = params.has("fps") ? parseFloat(params.get("fps")) : m.fps;
  const openings = m.openings;
  if (!openings.length) throw new Error("manifest.json lists no openings to start from");
  $("setting").textContent = `DDIM, ${S} mask × ${m.setting.diffusion_steps} diffusion steps, window ${W}`;

  const held = new Set();
  const KEYS = { ArrowUp: "up", KeyW: "up", ArrowDown: "down", KeyS: "down", ArrowLeft: "left", KeyA: "left",
                 ArrowRight: "right", KeyD: "right", Space: "fire" };
  addEventListener("keydown", (e) => { if (KEYS[e.code]) { held.add(KEYS[e.code]); e.preventDefault(); } });
  addEventListener("keyup", (e) => { if (KEYS[e.code]) { held.delete(KEYS[e.code]); e.preventDefault(); } });
  addEventListener("blur", () => held.clear());
  state.setKeys = (keys) => { held.clear(); keys.forEach((k_) => held.add(k_)); };

  function draw(data) { // uint8 (3, H, W) -> RGBA
    const px = H * Wd;
    for (let i = 0; i < px; i++) {
      image.data[4 * i] = data[i]; image.data[4 * i + 1] = data[px + i];
      image.data[4 * i + 2] = data[2 * px + i]; image.data[4 * i + 3] = 255;
    }
    ctx2d.putImageData(image, 0, 0);
  }

  let game = null, generation = 0;
  async function start(index) {
    const o = openings[index % openings.length];
    const latents = new Float32Array((await fetchBytes(o.latents)).buffer);
    const frames = await fetchBytes(o.frames);
    const seed = params.has("seed") ? parseInt(params.get("seed"), 10) : crypto.getRandomValues(new Uint32Array(1))[0];
    const history = new Map();
    for (let f = 0; f < k; f++) history.set(f, latents.slice(f * F, (f + 1) * F));
    draw(frames.subarray((k - 1) * 3 * H * Wd, k * 3 * H * Wd)); // the last real opening frame
    game = { t: k, history, taken: new Map(), uniform: mulberry32(seed), scriptAt: 0 };
    state.opening = o.seed; state.seed = seed; generation++;
    $("opening").textContent = `emulator seed ${o.seed}` + (params.has("seed") ? `, noise seed ${seed}` : "");
  }

  function ledInto(f) { // the action that led into frame f (null for frame 0, NOOP in the opening)
    if (f === 0) return m.null_action;
    if (f - 1 < k - 1) return m.noop;
    return game.taken.get(f - 1);
  }

  function readKey() {
    if (script) return script[game.scriptAt++ % script.length];
    return table.get([...held].sort().join("+")) ?? m.noop;
  }

  function noise() {
    const u = game.uniform;
    const out = { noise: new Float32Array(S * N * P), rank: null };
    if (useRank) {
      const keys = Array.from({ length: N }, () => u());
      const order = keys.map((_, i) => i).sort((a, b) => keys[a] - keys[b]);
      out.rank = new BigInt64Array(N);
      order.forEach((token, place) => { out.rank[token] = BigInt(place); });
    }
    for (let i = 0; i < out.noise.length; i++) out.noise[i] = gaussian(u) * temperature;
    return out;
  }

  async function step() {
    const g = game, t = g.t;
    const t0 = performance.now();
    const lat = new Float32Array((W - 1) * F), acts = new BigInt64Array(W - 1);
    for (let j = 0; j < W - 1; j++) {
      const f = t - W + 1 + j;
      lat.set(g.history.get(f), j * F);
      acts[j] = BigInt(ledInto(f));
    }
    const kv = (await sessions.context.run({
      latents: new ort.Tensor("float32", lat, [1, W - 1, C, h, w]),
      actions: new ort.Tensor("int64", acts, [W - 1]),
    })).kv;
    const t1 = performance.now();
    const action = readKey(); // read after the context part: the freshest key
    g.taken.set(t - 1, action);
    const drawn = noise();
    const feeds = { kv, action: new ort.Tensor("int64", BigInt64Array.from([BigInt(action)]), [1]),
                    noise: new ort.Tensor("float32", drawn.noise, [S, N, P]) };
    if (useRank) feeds.rank = new ort.Tensor("int64", drawn.rank, [N]);
    const latents = (await sessions.frame.run(feeds)).latents;
    const t2 = performance.now();
    const frame = (await sessions.decoder.run({ latents })).frame;
    const t3 = performance.now();
    if (g !== game) return; // a reset came in meanwhile
    draw(frame.data);
    const data = latents.data.slice();
    g.history.set(t, data); g.history.delete(t - W + 1); g.taken.delete(t - W - 1);
    g.t = t + 1;
    state.frames++;
    state.lastAction = action; state.lastActionName = m.actions[action];
    state.steps.push({ context: t1 - t0, frame: t2 - t1, decode: t3 - t2, latency: t3 - t1, total: t3 - t0 });
    if (state.recorded.length < record) {
      state.recorded.push({ t, action, latents: Array.from(data), image: Array.from(frame.data) });
    }
  }

  $("reset").disabled = false;
  let nextOpening = parseInt(params.get("opening") || "0", 10);
  $("reset").addEventListener("click", () => start(++nextOpening));
  state.reset = () => start(++nextOpening);
  await start(nextOpening);
  state.ready = true;
  $("status").textContent = `Running on ${describe}. Hold the keys; the model draws every frame after the opening.`;

  const period = fpsCap > 0 ? 1000 / fpsCap : 0;
  // Yield to the event loop (keys, drawing) without a timer: browsers clamp chained setTimeouts to >= 4 ms,
  // which a frame that is already late would pay on top of its lateness.
  const channel = new MessageChannel();
  const yieldNow = () => new Promise((resolve) => { channel.port1.onmessage = () => resolve(); channel.port2.postMessage(0); });
  let last = null, due = performance.now();
  const shown = [];
  for (;;) {
    await step();
    const now = performance.now();
    if (last !== null) state.intervals.push(now - last);
    last = now;
    shown.push(now);
    while (shown.length && shown[0] < now - 1000) shown.shift();
    const span = shown.length > 1 ? shown[shown.length - 1] - shown[0] : 0;
    state.fps = span >= 900 ? (shown.length - 1) / (span / 1000) : null;
    const s = state.steps[state.steps.length - 1];
    $("fps").textContent = state.fps === null ? "–" : state.fps.toFixed(1);
    $("ms").textContent = `${s.total.toFixed(0)} (context ${s.context.toFixed(0)}, frame ${s.frame.toFixed(0)}, decode ${s.decode.toFixed(0)})`;
    $("action").textContent = state.lastActionName;
    due = Math.max(due + period, now - period); // a late frame is made up by the next, by at most one period
    const wait = due - performance.now();
    await (wait >= 1 ? new Promise((resolve) => setTimeout(resolve, wait)) : yieldNow());
  }
}

main().catch((e) => fail(e.message || String(e)));
