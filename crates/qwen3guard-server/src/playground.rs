//! The playground: a page at `GET /` that shows the guard at work (Gen's verdict, the
//! Stream heads token by token, the proxy's hold-back), for people choosing a guard or
//! tuning a deployment's policy.
//!
//! The page is plain HTML, CSS and JavaScript modules under `playground/`, embedded in the
//! binary so that it works offline and needs no front-end build. It talks to the server
//! only through the public API (what it shows is what any client would get), and it is
//! served without a key: it holds no data, and it must load before a key can be typed.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::http::{AppError, AppState};
use crate::proxy::Release;

/// The page's files: name under `/playground/`, media type, contents.
const ASSETS: [(&str, &str, &str); 8] = [
    (
        "style.css",
        "text/css",
        include_str!("../playground/style.css"),
    ),
    ("app.js", JS, include_str!("../playground/app.js")),
    ("api.js", JS, include_str!("../playground/api.js")),
    (
        "conversation.js",
        JS,
        include_str!("../playground/conversation.js"),
    ),
    ("gen.js", JS, include_str!("../playground/gen.js")),
    ("stream.js", JS, include_str!("../playground/stream.js")),
    ("chart.js", JS, include_str!("../playground/chart.js")),
    ("proxy.js", JS, include_str!("../playground/proxy.js")),
];

const JS: &str = "text/javascript";

const INDEX: &str = include_str!("../playground/index.html");

/// Paths that answer without a key: the page, its files and its settings.
pub fn is_open(path: &str) -> bool {
    path == "/" || path.starts_with("/playground/")
}

/// Scripts and styles from this origin only, and requests to it only: whatever a
/// conversation contains is shown as text, and even a mistake in that could not load or
/// send anything elsewhere.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

fn page(media: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, media),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the page.
pub async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

/// `GET /playground/{file}`: one of its files.
pub async fn asset(Path(name): Path<String>) -> Result<Response, AppError> {
    ASSETS
        .iter()
        .find(|(file, _, _)| *file == name)
        .map(|(_, media, body)| page(media, body))
        .ok_or_else(|| AppError::NoRoute(format!("the playground has no file {name:?}")))
}

/// `GET /playground/settings.json`: what the page needs to know before its first request
/// (whether a key is needed, which panels have a model behind them, the policy mode).
pub async fn settings(State(state): State<AppState>) -> Json<Value> {
    let config = &state.config;
    let proxy = config.proxy.as_ref().map(|p| {
        json!({
            "release": match p.release {
                Release::Held => "held",
                Release::Async => "async",
            },
            "hold_back": p.hold_back,
            "retries": p.retries,
        })
    });
    Json(json!({
        "auth": !config.api_keys.is_empty(),
        "mode": config.mode,
        "gen_model": config.gen_model,
        "stream_model": config.stream_model,
        "proxy": proxy,
        "max_session_tokens": config.limits.max_session_tokens,
    }))
}
