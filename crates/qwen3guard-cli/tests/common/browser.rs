//! Headless Chromium driven through the DevTools protocol over its WebSocket: just what a
//! page test needs (navigate, evaluate, click, type, press a key, screenshot).
//!
//! Chromium is found as `QWEN3GUARD_CHROMIUM` or `chromium` on the `PATH` (Debian's
//! package; `.ci/run` installs it). Without one the tests that need it say they are
//! skipped; under CI (`CI` set) a missing browser fails them instead.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::common::Scratch;

/// The browser's executable, if there is one.
pub fn chromium() -> Option<PathBuf> {
    crate::common::tool(
        "QWEN3GUARD_CHROMIUM",
        "chromium",
        "apt-get install chromium",
    )
}

/// One headless browser with one page attached.
pub struct Browser {
    child: Child,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    _profile: Scratch,
}

impl Browser {
    /// Starts `executable` on an empty profile with a `width` x `height` window and opens a
    /// blank page.
    pub fn launch(executable: &PathBuf, width: u32, height: u32) -> Browser {
        let profile = Scratch::new("chromium-profile");
        let child = Command::new(executable)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts");
        // Chromium writes its port and the browser's WebSocket path once it listens.
        let active = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(60);
        let endpoint = loop {
            if let Ok(text) = std::fs::read_to_string(&active) {
                let lines: Vec<&str> = text.lines().collect();
                if lines.len() >= 2 {
                    break format!("ws://127.0.0.1:{}{}", lines[0], lines[1]);
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not open its DevTools port"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let (socket, _) = tungstenite::connect(endpoint).expect("DevTools WebSocket");
        let mut browser = Browser {
            child,
            socket,
            session: String::new(),
            next_id: 0,
            _profile: profile,
        };
        let target = browser.browser_command("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"]
            .as_str()
            .expect("a target id")
            .to_string();
        let attached = browser.browser_command(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a session")
            .to_string();
        browser.command("Page.enable", json!({}));
        browser.command("Runtime.enable", json!({}));
        browser.command(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
        browser
    }

    fn send(&mut self, method: &str, params: Value, session: bool) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if session {
            message["sessionId"] = Value::from(self.session.clone());
        }
        self.socket
            .send(Message::text(message.to_string()))
            .expect("DevTools send");
        loop {
            let reply = match self.socket.read().expect("DevTools read") {
                Message::Text(text) => serde_json::from_str::<Value>(&text).expect("DevTools JSON"),
                _ => continue,
            };
            // Events (no id) and other answers are not what this call waits for.
            if reply["id"].as_u64() != Some(id) {
                continue;
            }
            if let Some(error) = reply.get("error") {
                panic!("DevTools {method} failed: {error}");
            }
            return reply["result"].clone();
        }
    }

    fn browser_command(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, false)
    }

    /// Sends a command to the page and returns its result.
    pub fn command(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, true)
    }

    /// Loads `url`.
    pub fn goto(&mut self, url: &str) {
        self.command("Page.navigate", json!({"url": url}));
    }

    /// The value of a JavaScript expression (promises awaited), or what it threw.
    fn try_eval(&mut self, expression: &str) -> Result<Value, Value> {
        let result = self.command(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        match result.get("exceptionDetails") {
            Some(details) => Err(details.clone()),
            None => Ok(result["result"]["value"].clone()),
        }
    }

    /// The value of a JavaScript expression (promises awaited); a thrown error fails.
    pub fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression)
            .unwrap_or_else(|details| panic!("{expression} threw: {details}"))
    }

    /// Polls `expression` until it is truthy (its value) or `seconds` pass (a failure that
    /// names `what`). While a page loads the expression may throw (no `document.body`
    /// yet): that counts as not yet.
    pub fn wait_for(&mut self, expression: &str, seconds: u64, what: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let value = match self.try_eval(expression) {
                Ok(value) => value,
                Err(details) => {
                    assert!(Instant::now() < deadline, "waiting for {what}: {details}");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Clicks the middle of the element `selector` with the mouse, as a person would.
    pub fn click(&mut self, selector: &str) {
        let quoted = serde_json::to_string(selector).unwrap();
        let at = self.eval(&format!(
            "(() => {{ const e = document.querySelector({quoted}); e.scrollIntoView({{block: 'center'}});
               const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
        ));
        let (x, y) = (at[0].as_f64().unwrap(), at[1].as_f64().unwrap());
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.command(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    /// Replaces the text of the field `selector` by typing `text` into it.
    pub fn type_into(&mut self, selector: &str, text: &str) {
        self.click(selector);
        let quoted = serde_json::to_string(selector).unwrap();
        self.eval(&format!("document.querySelector({quoted}).select()"));
        self.command("Input.insertText", json!({"text": text}));
    }

    /// Presses and releases a key (`ArrowRight`, `Home`, ...) in the focused element.
    pub fn press(&mut self, key: &str) {
        let code = match key {
            "ArrowRight" => 39,
            "ArrowLeft" => 37,
            "Home" => 36,
            "End" => 35,
            _ => 0,
        };
        for kind in ["rawKeyDown", "keyUp"] {
            self.command(
                "Input.dispatchKeyEvent",
                json!({"type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code}),
            );
        }
    }

    /// A PNG of the whole page.
    pub fn screenshot(&mut self) -> Vec<u8> {
        let metrics = self.command("Page.getLayoutMetrics", json!({}));
        let size = &metrics["cssContentSize"];
        let shot = self.command(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true, "clip": {
                "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}}),
        );
        base64(shot["data"].as_str().expect("screenshot data"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Decodes standard base64 (what the protocol sends binary data as).
fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for group in digits.chunks(4) {
        let mut bits = 0u32;
        for (i, &d) in group.iter().enumerate() {
            bits |= u32::from(d) << (18 - 6 * i);
        }
        out.extend_from_slice(&bits.to_be_bytes()[1..group.len()]);
    }
    out
}

#[test]
fn base64_decodes_every_padding() {
    assert_eq!(base64("TWFu"), b"Man");
    assert_eq!(base64("TWE="), b"Ma");
    assert_eq!(base64("TQ=="), b"M");
}
