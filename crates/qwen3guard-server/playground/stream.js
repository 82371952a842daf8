// The Stream panel: a session opened on the prompt, the response typed out to it through
// `POST /v1/stream/sessions/{id}/append`, and every judged token drawn in its risk colour.
// The strict/loose switch only redraws: the server reports where each mode stops
// (`stops`), so nothing runs again.

import { call } from "./api.js";
import { drawChart } from "./chart.js";

/** The three levels in the order the API's probabilities are listed. */
export const LEVELS = ["Safe", "Unsafe", "Controversial"];

/** Whether `mode` blocks `level` (the rule of `Severity::is_blocked` in policy.rs). */
export function blocks(level, mode) {
  return level === "Unsafe" || (level === "Controversial" && mode === "strict");
}

/** The lightest shade still legible: a token's opacity runs from this to 1. */
const MIN_OPACITY = 0.35;

/** Splits text the way an LLM streams it: a few characters at a time. */
export function pieces(text) {
  const parts = text.match(/\s*\S{1,4}|\s+/gu) || [];
  return parts.join("") === text ? parts : [text];
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class StreamView {
  constructor(panel) {
    this.box = panel.querySelector("#tokens");
    this.summary = panel.querySelector("#stream-summary");
    this.detail = panel.querySelector("#token-detail");
    this.chart = panel.querySelector("#chart");
    this.selected = -1;
    this.clear();
    this.box.addEventListener("keydown", (e) => this.key(e));
    this.box.addEventListener("mouseover", (e) => {
      const index = e.target.dataset && e.target.dataset.position;
      if (index !== undefined) this.select(Number(index), false);
    });
  }

  clear() {
    this.tokens = [];
    this.stops = { strict: null, loose: null };
    this.prompt = null;
    this.pending = "";
    this.ms = 0;
    this.selected = -1;
  }

  /**
   * Opens a session on the turns before the last assistant turn and types that turn out,
   * `pace` ms between pieces, redrawing under `mode()` after each answer.
   */
  async run(messages, mode, pace) {
    this.clear();
    const last = messages.length - 1;
    const hasResponse = last > 0 && messages[last].role === "assistant";
    const prompt = hasResponse ? messages.slice(0, last) : messages;
    const response = hasResponse ? messages[last].content : "";
    const started = performance.now();
    const opened = await call("POST", "/v1/stream/sessions", { messages: prompt });
    this.prompt = opened.prompt;
    const path = `/v1/stream/sessions/${encodeURIComponent(opened.id)}/append`;
    try {
      let sent = 0;
      const chars = [...response];
      for (const piece of pieces(response)) {
        const appended = await call("POST", path, { text: piece, offset: sent });
        sent += [...piece].length;
        this.take(appended, chars.slice(appended.checked_offset, sent).join(""));
        this.ms = performance.now() - started;
        this.render(mode());
        await sleep(pace);
      }
      if (hasResponse) this.take(await call("POST", path, { final: true }), "");
      this.ms = performance.now() - started;
      this.render(mode());
    } finally {
      // A session left open would hold memory until its idle timeout.
      call("DELETE", `/v1/stream/sessions/${encodeURIComponent(opened.id)}`).catch(() => {});
    }
  }

  take(appended, pending) {
    this.tokens.push(...appended.tokens);
    this.stops = appended.stops;
    this.pending = pending;
  }

  /** Draws the tokens, the summary and the chart under `mode`. */
  render(mode) {
    const stop = this.stops[mode];
    const flagAt = stop ? stop.flagged_at : null;
    const spans = this.tokens.map((t, position) => {
      const span = document.createElement("span");
      const level = t.risk_level;
      const p = t.risk_probs[level];
      span.className = `tok ${level.toLowerCase()}`;
      if (blocks(level, mode)) span.classList.add("blocked");
      if (t.index === flagAt) span.classList.add("flag");
      if (position === this.selected) span.classList.add("selected");
      span.style.setProperty("--p", Math.max(MIN_OPACITY, p).toFixed(3));
      span.textContent = t.text;
      span.id = `tok-${position}`;
      span.dataset.position = position;
      span.dataset.index = t.index;
      span.setAttribute("role", "option");
      span.setAttribute("aria-label", `${JSON.stringify(t.text)}: ${level} ${p.toFixed(2)}`);
      span.title = describe(t);
      return span;
    });
    if (this.pending) {
      const rest = document.createElement("span");
      rest.className = "pending";
      rest.textContent = this.pending;
      rest.title = "sent, not judged yet: its tokens may still change";
      spans.push(rest);
    }
    this.box.replaceChildren(...spans);

    const count = (level) => this.tokens.filter((t) => t.risk_level === level).length;
    const blocked = this.tokens.filter((t) => blocks(t.risk_level, mode)).length;
    Object.assign(this.summary.dataset, {
      tokens: this.tokens.length,
      unsafe: count("Unsafe"),
      controversial: count("Controversial"),
      blocked,
      flag: flagAt === null ? "none" : flagAt,
    });
    const prompt = this.prompt
      ? `Prompt: ${this.prompt.risk_level} (${this.prompt.risk_probs[this.prompt.risk_level].toFixed(2)}). `
      : "";
    const where = stop
      ? `Under ${mode} the stream stops at token ${flagAt} (${stop.risk_level}, ${stop.category}).`
      : `Under ${mode} nothing stops the stream.`;
    this.summary.textContent =
      `${prompt}${this.tokens.length} response tokens: ${count("Unsafe")} Unsafe, ` +
      `${count("Controversial")} Controversial, ${blocked} blocked by ${mode}. ${where} ` +
      `${this.ms.toFixed(0)} ms.`;
    drawChart(this.chart, this.tokens, flagAt);
    if (this.selected >= this.tokens.length) this.selected = -1;
  }

  /** Shows token `position`'s details; `focus` also marks it as the active option. */
  select(position, focus) {
    if (position < 0 || position >= this.tokens.length) return;
    const before = this.box.querySelector(".tok.selected");
    if (before) before.classList.remove("selected");
    this.selected = position;
    const span = this.box.querySelector(`#tok-${position}`);
    if (span) {
      span.classList.add("selected");
      if (focus) {
        this.box.setAttribute("aria-activedescendant", span.id);
        span.scrollIntoView({ block: "nearest" });
      }
    }
    this.detail.textContent = describe(this.tokens[position]);
  }

  key(e) {
    const moves = {
      ArrowRight: this.selected + 1,
      ArrowDown: this.selected + 1,
      ArrowLeft: this.selected - 1,
      ArrowUp: this.selected - 1,
      Home: 0,
      End: this.tokens.length - 1,
    };
    if (!(e.key in moves)) return;
    e.preventDefault();
    this.select(Math.max(0, moves[e.key]), true);
  }
}

function describe(t) {
  const probs = LEVELS.map((l) => `${l} ${t.risk_probs[l].toFixed(3)}`).join(", ");
  return `Position ${t.index}, token id ${t.token_id}, text ${JSON.stringify(t.text)}: ` +
    `${t.risk_level} (${probs}); category ${t.category} (${t.category_prob.toFixed(3)})`;
}
