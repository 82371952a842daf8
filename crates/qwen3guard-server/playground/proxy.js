// The proxy panel: a chat with the upstream through `POST /v1/chat/completions`
// (streamed), showing the answer exactly as a client receives it, how far the guard has
// judged ahead of what was released (the hold-back), and any cut-off, retraction or
// rollback as its chunk arrives.

import { call, events } from "./api.js";

export class ChatView {
  constructor(panel, settings) {
    this.answer = panel.querySelector("#chat-answer");
    this.progress = panel.querySelector("#chat-progress");
    this.log = panel.querySelector("#chat-events");
    this.settings = settings;
    this.history = [];
    this.model = "default";
    const p = settings.proxy;
    panel.querySelector("#proxy-settings").textContent =
      `Release ${p.release}, hold-back ${p.hold_back} token(s), ` +
      (p.retries === null ? "a flag ends the answer" : `a flag rolls back, up to ${p.retries} retries`) +
      `; policy mode ${settings.mode} (the server's).`;
  }

  /** Asks the upstream for its model list, to name a model in requests. */
  async discover() {
    const models = await call("GET", "/v1/models");
    if (models && models.data && models.data.length) this.model = models.data[0].id;
  }

  /** Sends `text` as the next user message and shows the answer as it streams. */
  async send(text) {
    const messages = [...this.history, { role: "user", content: text }];
    this.answer.replaceChildren();
    this.log.replaceChildren();
    this.answer.dataset.finish = "";
    this.answer.dataset.cut = "";
    let received = "";
    let retract = null;
    let chunks = 0;
    await events("/v1/chat/completions", { model: this.model, stream: true, messages }, (data) => {
      if (data === "[DONE]") {
        this.note("The stream ended ([DONE]).");
        return;
      }
      if (data.error) {
        this.note(`Error in the stream: ${data.error.message}`);
        return;
      }
      chunks += 1;
      const choice = (data.choices || [])[0] || {};
      const delta = choice.delta || {};
      received += delta.content || "";
      const guard = data.qwen3guard || {};
      if (guard.retract) retract = guard.retract;
      if (guard.retries) {
        this.note(`Rolled back and regenerated ${guard.retries} time(s), ${guard.wait_tokens} wait token(s).`);
      }
      if (guard.flagged === "prompt") this.note("The prompt was flagged: the upstream was not called.");
      if (choice.finish_reason) {
        this.answer.dataset.finish = choice.finish_reason;
        if (choice.finish_reason === "content_filter" && guard.verdict) {
          const v = guard.verdict;
          this.answer.dataset.cut = guard.cut_offset ?? "";
          this.note(
            `Cut off: ${v.risk_level} (${v.category}) flagged at token ${v.flagged_at}` +
              (guard.cut_offset !== undefined ? `, answer cut at character ${guard.cut_offset}` : "") +
              (guard.refused ? "; retries spent, refused." : "."),
          );
        } else {
          this.note(`Finished: ${choice.finish_reason}` + (guard.verdict ? `, verdict ${guard.verdict.risk_level}.` : "."));
        }
      }
      this.draw(received, retract);
      const judged = guard.checked_offset;
      if (judged !== undefined) {
        const released = [...received].length;
        this.progress.textContent =
          `${chunks} chunk(s); the guard has judged ${judged} character(s) of the answer, ` +
          `${released} released` + (judged > released ? `, ${judged - released} held back.` : ".");
      }
    });
    this.history = [...messages, { role: "assistant", content: received }];
    return received;
  }

  /** The answer as received, with any retracted range struck through. */
  draw(text, retract) {
    const chars = [...text];
    if (!retract) {
      this.answer.textContent = text;
      return;
    }
    const gone = document.createElement("del");
    gone.textContent = chars.slice(retract.from, retract.to).join("");
    gone.title = "sent, then retracted by the guard";
    this.answer.replaceChildren(chars.slice(0, retract.from).join(""), gone, chars.slice(retract.to).join(""));
  }

  note(text) {
    const item = document.createElement("li");
    item.textContent = text;
    this.log.append(item);
  }
}
