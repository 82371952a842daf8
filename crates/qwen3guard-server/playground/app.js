// The playground's entry: reads the server's settings, builds the panels and wires the
// buttons. Each panel's `data-state` (idle, running, done, error) says where it is, for
// people and for the browser test alike.

import { ApiError, call, setKey } from "./api.js";
import { Editor, PRESETS } from "./conversation.js";
import { runGen, showGen } from "./gen.js";
import { StreamView } from "./stream.js";
import { ChatView } from "./proxy.js";

/** Milliseconds between typed-out pieces: slow enough to watch, quick enough to wait. */
const PACE_MS = 40;

const $ = (selector) => document.querySelector(selector);

function showError(error) {
  const box = $("#error");
  if (!error) {
    box.hidden = true;
    box.textContent = "";
    delete box.dataset.status;
    return;
  }
  const api = error instanceof ApiError ? error : new ApiError(-1, "page", String(error));
  box.textContent = api.describe();
  box.dataset.status = api.status;
  box.dataset.code = api.code;
  box.hidden = false;
}

/** Runs `task` with `button` disabled and `panel`'s state kept up to date. */
async function running(panel, button, task) {
  showError(null);
  button.disabled = true;
  panel.dataset.state = "running";
  panel.setAttribute("aria-busy", "true");
  try {
    await task();
    panel.dataset.state = "done";
  } catch (e) {
    panel.dataset.state = "error";
    showError(e);
  } finally {
    button.disabled = false;
    panel.removeAttribute("aria-busy");
  }
}

async function main() {
  const settings = await call("GET", "/playground/settings.json");
  const mode = () => document.querySelector('input[name="mode"]:checked').value;
  document.querySelector(`input[name="mode"][value="${settings.mode}"]`).checked = true;

  $("#key-field").hidden = !settings.auth;
  $("#api-key").addEventListener("input", (e) => setKey(e.target.value));
  // A local checkpoint is named by its folder; a Hub id keeps its owner.
  const name = (model) => (model ? (model.startsWith("/") ? model.split("/").filter(Boolean).at(-1) : model) : "not loaded");
  const models = [
    `Gen: ${name(settings.gen_model)}`,
    `Stream: ${name(settings.stream_model)}`,
    `mode ${settings.mode}`,
  ];
  $("#server-status").textContent = models.join(" · ");
  call("GET", "/health")
    .then((h) => ($("#server-status").textContent = `${models.join(" · ")} · kernels ${h.isa}`))
    .catch((e) => showError(e));

  const editor = new Editor($("#turns"));
  const preset = $("#preset");
  PRESETS.forEach((p, i) => preset.append(new Option(p.name, String(i))));
  preset.addEventListener("change", () => editor.load(PRESETS[Number(preset.value)].turns));
  editor.load(PRESETS[0].turns);
  $("#add-turn").addEventListener("click", () => editor.add().focus());

  let lastGen = null;
  $("#run-gen").disabled = !settings.gen_model;
  $("#run-gen").addEventListener("click", (e) =>
    running($("#gen-panel"), e.currentTarget, async () => {
      lastGen = await runGen($("#gen-panel"), editor.turns(), mode());
    }),
  );

  const stream = new StreamView($("#stream-panel"));
  $("#run-stream").disabled = !settings.stream_model;
  $("#run-stream").addEventListener("click", (e) =>
    running($("#stream-panel"), e.currentTarget, () => stream.run(editor.turns(), mode, PACE_MS)),
  );
  // The switch redraws from what the server already said; nothing runs again.
  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener("change", () => {
      stream.render(mode());
      if (lastGen) showGen($("#gen-panel"), lastGen.verdict, lastGen.ms, mode());
    });
  }

  if (settings.proxy) {
    $("#proxy-panel").hidden = false;
    const chat = new ChatView($("#proxy-panel"), settings);
    $("#run-chat").addEventListener("click", (e) =>
      running($("#proxy-panel"), e.currentTarget, async () => {
        await chat.discover().catch(() => {});
        await chat.send($("#chat-input").value);
      }),
    );
  }
  document.body.dataset.ready = "true";
}

main().catch((e) => {
  showError(e);
  document.body.dataset.ready = "error";
});
