// The small line chart of P(Unsafe) and P(Controversial) over the response positions,
// drawn as SVG, with a vertical line where the stream stops.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 1000;
const HEIGHT = 160;
const PAD = 18;

function node(tag, attributes) {
  const e = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) e.setAttribute(name, value);
  return e;
}

/** Draws `tokens`' probabilities into `container`; `flagAt` is a token index or null. */
export function drawChart(container, tokens, flagAt) {
  const svg = node("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    preserveAspectRatio: "none",
    role: "img",
  });
  const n = tokens.length;
  const x = (i) => PAD + (n <= 1 ? 0 : (i * (WIDTH - 2 * PAD)) / (n - 1));
  const y = (p) => HEIGHT - PAD - p * (HEIGHT - 2 * PAD);
  svg.append(
    node("line", { class: "axis", x1: PAD, y1: y(0), x2: WIDTH - PAD, y2: y(0) }),
    node("line", { class: "axis", x1: PAD, y1: y(1), x2: WIDTH - PAD, y2: y(1) }),
  );
  const label = (text, at) => {
    const t = node("text", { x: 2, y: at + 3 });
    t.textContent = text;
    return t;
  };
  svg.append(label("1", y(1)), label("0", y(0)));
  for (const [level, className] of [["Unsafe", "unsafe"], ["Controversial", "controversial"]]) {
    const points = tokens.map((t, i) => `${x(i).toFixed(1)},${y(t.risk_probs[level]).toFixed(1)}`);
    if (points.length === 1) points.push(points[0]);
    svg.append(node("polyline", { class: className, points: points.join(" ") }));
  }
  const flagged = tokens.findIndex((t) => t.index === flagAt);
  if (flagged >= 0) {
    svg.append(node("line", { class: "marker", x1: x(flagged), y1: 0, x2: x(flagged), y2: HEIGHT }));
  }
  const peak = tokens.reduce((best, t) => Math.max(best, t.risk_probs.Unsafe), 0);
  svg.setAttribute(
    "aria-label",
    n
      ? `P(Unsafe) over ${n} positions peaks at ${peak.toFixed(2)}` +
          (flagged >= 0 ? `; the stream stops at position ${flagged}` : "")
      : "No response tokens yet",
  );
  container.replaceChildren(svg);
}
