// The Gen panel: `POST /v1/guard` on the conversation, shown as the verdict, the
// categories, the refusal and the three label probabilities as bars.

import { call } from "./api.js";
import { blocks, LEVELS } from "./stream.js";

/** Runs Gen on `messages` and shows the answer in `panel`; returns it and the time. */
export async function runGen(panel, messages, mode) {
  const started = performance.now();
  const verdict = await call("POST", "/v1/guard", { messages });
  const ms = performance.now() - started;
  showGen(panel, verdict, ms, mode);
  return { verdict, ms };
}

/** Shows `verdict` (and whether `mode` blocks it) in `panel`. */
export function showGen(panel, verdict, ms, mode) {
  const result = panel.querySelector("#gen-result");
  result.replaceChildren();
  const label = verdict.safety || "unparsed";
  const head = element("p", "verdict", `Safety: ${label}`);
  head.id = "gen-label";
  head.dataset.label = label;
  result.append(head);

  const decision = verdict.safety ? (blocks(verdict.safety, mode) ? "blocked" : "allowed") : "judged by its scores";
  result.append(element("p", "", `Under ${mode}: ${decision}.`));
  const categories = verdict.categories.length ? verdict.categories.join(", ") : "None";
  const cats = element("p", "", `Categories: ${categories}`);
  cats.id = "gen-categories";
  result.append(cats);
  if (verdict.refusal !== null && verdict.refusal !== undefined) {
    result.append(element("p", "", `Refusal: ${verdict.refusal ? "Yes" : "No"}`));
  }

  const bars = element("ul", "bars", "");
  bars.setAttribute("aria-label", "Label probabilities");
  for (const level of LEVELS) {
    const p = verdict.scores[level];
    const item = document.createElement("li");
    const bar = element("div", "bar", "");
    const fill = element("span", level.toLowerCase(), "");
    fill.style.width = `${(p * 100).toFixed(1)}%`;
    bar.append(fill);
    bar.setAttribute("role", "meter");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "1");
    bar.setAttribute("aria-valuenow", p.toFixed(4));
    bar.setAttribute("aria-label", `P(${level})`);
    item.append(element("span", "", level), bar, element("span", "", p.toFixed(3)));
    bars.append(item);
  }
  result.append(bars);
  const time = element("p", "help", `${verdict.prompt_tokens} prompt tokens, ${ms.toFixed(0)} ms (as the page saw it)`);
  time.id = "gen-time";
  result.append(time);
  if (verdict.generated_text) {
    result.append(element("pre", "help", verdict.generated_text));
  }
}

function element(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text) e.textContent = text;
  return e;
}
