//! The web page of `ragmap serve`, in a real browser: Debian's chromium,
//! driven through chromedriver (`bash scripts/browser install`). A person's
//! way through it: the API key, a question sent with Enter, the answer
//! streaming in, a citation opened from the keyboard, hostile page text shown
//! as text, a follow-up carrying the conversation, search-only mode, 中文.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const KEY: &str = "web-page-test-key-7f3a";
const QUESTION: &str = "How does LoRA fine-tune a model?";
/// The scripted model's standalone form of the follow-up.
const STANDALONE: &str = "Which LoRA adapter rank is usual?";
const HOSTILE_TEXT: &str = "<script>alert(1)</script> and <img src=x onerror=alert(1)>";

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
    /// The browser profile (`--user-data-dir`), fresh for each run.
    profile: tempfile::TempDir,
}

impl Driver {
    fn start() -> Option<Driver> {
        for exe in [CHROMEDRIVER, CHROMIUM] {
            if !Path::new(exe).exists() {
                return unavailable(&format!(
                    "{exe} is missing (install with `bash scripts/browser install`)"
                ));
            }
        }
        let port = closed_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profile: tempfile::tempdir().unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!("chromedriver exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen in 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(driver)
    }

    async fn browser(&self) -> Client {
        let profile = self.profile.path().display();
        let caps = json!({
            "browserName": "chrome",
            // A dialog opened by page text stays open, so the test can see it.
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1200,1000",
                    "--lang=en-US", format!("--user-data-dir={profile}"),
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("cannot start chromium through chromedriver: {e}"))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The number of the prompt source whose title starts with `title`.
fn source_number(prompt: &str, title: &str) -> Option<String> {
    prompt.split("<source id=\"").skip(1).find_map(|block| {
        let (number, rest) = block.split_once('"')?;
        rest.starts_with(&format!(" title=\"{title}"))
            .then(|| number.to_string())
    })
}

/// The answer the scripted model streams: three pieces 600 ms apart, citing
/// the hostile note and the note whose URL is `javascript:`.
fn answer_pieces(prompt: &str) -> Vec<String> {
    let hostile = source_number(prompt, "LoRA field notes").unwrap_or_else(|| "0".into());
    let scripted = source_number(prompt, "Adapter ranks").unwrap_or_else(|| "0".into());
    vec![
        "LoRA trains small ".into(),
        "low-rank adapters ".into(),
        format!("instead of the whole model [{hostile}], at a rank of 8 or 16 [{scripted}]."),
    ]
}

fn model() -> ScriptedServer {
    ScriptedServer::start(|req| {
        if !req.path.ends_with("/chat/completions") {
            return Reply::json(404, r#"{"error":"no"}"#);
        }
        let body = req.json();
        let system = body["messages"][0]["content"].as_str().unwrap_or("");
        if system.contains("rewrite follow-up questions") {
            return openai_stream(&[STANDALONE]);
        }
        let prompt = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or("")
            .to_string();
        let mut reply = sse_reply();
        for piece in answer_pieces(&prompt) {
            reply = reply.body(openai_delta(&piece)).sleep(600);
        }
        reply.body(OPENAI_STOP).body(OPENAI_DONE)
    })
}

fn workspace(upstream: &str) -> Workspace {
    let ws = Workspace::new(&format!(
        "[llm]\nbase_url = \"{upstream}\"\nmodel = \"scripted\"\nrewrite = false\n\n[server]\nworkers = 1\n"
    ));
    write_topic_docs(&ws);
    // Page text that is HTML: it must show as these characters, never run.
    ws.write_doc(
        "notes/lora-html.md",
        &format!(
            "---\ntitle: \"LoRA field notes <img src=x onerror=alert(2)>\"\nurl: \"https://example.com/lora-notes\"\n---\n\
             # LoRA field notes\n\nLoRA fine-tunes a model by training low-rank adapters. \
             A crawled page once contained {HOSTILE_TEXT} inside its text.\n"
        ),
    );
    // A source whose URL is a script: shown, never a link.
    ws.write_doc(
        "notes/ranks.md",
        "---\ntitle: \"Adapter ranks\"\nurl: \"javascript:alert(3)\"\n---\n\
         # Adapter ranks\n\nLoRA adapters usually use a rank of 8 or 16 to fine-tune a model.\n",
    );
    ws.build_index();
    ws
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![])
        .await
        .unwrap_or_else(|e| panic!("script {script:?} failed: {e}"))
}

async fn text(c: &Client, css: &str) -> String {
    js(
        c,
        &format!("const e = document.querySelector({css:?}); return e ? e.textContent : null;"),
    )
    .await
    .as_str()
    .unwrap_or_default()
    .to_string()
}

/// Polls `script` (a JS expression) until it is true, for at most `secs`.
async fn until(c: &Client, what: &str, script: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if js(c, &format!("return !!({script});")).await == json!(true) {
            return;
        }
        if Instant::now() >= deadline {
            let page = text(c, "body").await;
            panic!("timed out waiting for {what}; the page reads: {page}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn find(c: &Client, css: &str) -> Element {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no element {css}: {e}"))
}

/// Elements or attributes hostile text would have created had it been parsed
/// as HTML: none may exist.
async fn assert_nothing_injected(c: &Client) {
    let found = js(
        c,
        r#"return {
            imgs: document.querySelectorAll("img").length,
            scripts: document.scripts.length,
            handlers: document.querySelectorAll("[onerror],[onload],[onclick]").length,
            jsLinks: document.querySelectorAll("a[href^='javascript' i]").length,
            alerts: window.__alerts || 0,
        };"#,
    )
    .await;
    assert_eq!(
        found,
        json!({"imgs": 0, "scripts": 1, "handlers": 0, "jsLinks": 0, "alerts": 0}),
        "page text turned into markup"
    );
    // No dialog is open either (a script that ran before the counter existed).
    assert!(c.get_alert_text().await.is_err(), "an alert dialog is open");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_streams_cites_and_shows_hostile_text_as_text() {
    if !model_available() {
        return;
    }
    let Some(driver) = Driver::start() else {
        return;
    };
    let upstream = model();
    let ws = workspace(&upstream.url("/v1"));
    let served = Served::start(&ws, &[], &[("RAGMAP_SERVER_KEY", KEY)]);
    let c = driver.browser().await;
    c.goto(&served.at("/")).await.unwrap();
    assert_eq!(c.title().await.unwrap(), "ragmap");
    // Counts alert() calls from here on, and records every state of the
    // answer so that streaming can be told from one late update.
    js(
        &c,
        r##"window.__alerts = 0;
        const real = window.alert;
        window.alert = (m) => { window.__alerts++; real.call(window, m); };
        window.__states = [];
        new MutationObserver(() => {
            const a = document.querySelector("#turns li:last-child .a");
            const s = a ? a.textContent : "";
            if (s && window.__states[window.__states.length - 1] !== s) window.__states.push(s);
        }).observe(document.getElementById("turns"), {subtree: true, childList: true, characterData: true});
        return true;"##,
    )
    .await;
    until(
        &c,
        "the index status",
        "/documents/.test(document.getElementById('health').textContent)",
        10,
    )
    .await;

    // Without the key the server says 401 and the page asks for it.
    let q = find(&c, "#q").await;
    assert_eq!(
        js(&c, "return document.activeElement.id;").await,
        "q",
        "the question box has the focus on load"
    );
    q.send_keys(&format!("{QUESTION}{}", char::from(Key::Enter)))
        .await
        .unwrap();
    until(
        &c,
        "the API key message",
        "document.querySelector('#status.error') && document.getElementById('settings').open",
        20,
    )
    .await;
    assert!(text(&c, "#status").await.contains("API key"));
    let key = find(&c, "#key").await;
    key.send_keys(&format!("{KEY}{}", char::from(Key::Tab)))
        .await
        .unwrap();
    assert_eq!(
        js(&c, "return sessionStorage.getItem('ragmap.key');").await,
        KEY
    );

    // Asked again with the keyboard: the answer streams in.
    find(&c, "#reset").await.click().await.unwrap();
    let q = find(&c, "#q").await;
    q.send_keys(&format!("{QUESTION}{}", char::from(Key::Enter)))
        .await
        .unwrap();
    until(
        &c,
        "the answer to end",
        "document.querySelector('#turns li:last-child .a[aria-busy=false]') && document.querySelector('#turns .cite')",
        60,
    )
    .await;
    let prompt = upstream
        .requests()
        .iter()
        .rev()
        .find(|r| r.path.ends_with("/chat/completions"))
        .expect("the model was asked")
        .json()["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    let hostile_n = source_number(&prompt, "LoRA field notes").expect("hostile note retrieved");
    let js_n = source_number(&prompt, "Adapter ranks").expect("javascript: note retrieved");
    let full = answer_pieces(&prompt).concat();
    assert_eq!(text(&c, "#turns li:last-child .a").await, full);
    let states: Vec<String> =
        serde_json::from_value(js(&c, "return window.__states;").await).unwrap();
    let partial: Vec<&String> = states
        .iter()
        .filter(|s| s.len() < full.len() && full.starts_with(s.as_str()))
        .collect();
    assert!(
        partial.len() >= 2,
        "the answer arrived in one piece, not streamed: {states:?}"
    );
    assert_eq!(
        find(&c, "#turns .a")
            .await
            .attr("aria-live")
            .await
            .unwrap()
            .as_deref(),
        Some("polite")
    );

    // The citation is a button; Enter on it opens its passage with the source link.
    let cite = find(&c, &format!("#turns .cite[data-n='{hostile_n}']")).await;
    assert_eq!(cite.text().await.unwrap(), format!("[{hostile_n}]"));
    cite.send_keys(&char::from(Key::Enter).to_string())
        .await
        .unwrap();
    until(
        &c,
        "the passage",
        "!document.getElementById('passage').hidden",
        5,
    )
    .await;
    assert_eq!(js(&c, "return document.activeElement.id;").await, "passage");
    let passage = text(&c, "#passage-text").await;
    assert!(passage.contains(HOSTILE_TEXT), "passage shows: {passage:?}");
    assert!(find(&c, "#passage-text")
        .await
        .text()
        .await
        .unwrap()
        .contains("<script>alert(1)</script>"));
    let heading = text(&c, "#passage-h").await;
    assert!(
        heading.contains("LoRA field notes <img src=x onerror=alert(2)>"),
        "{heading}"
    );
    let link = find(&c, "#passage-link").await;
    assert_eq!(
        link.attr("href").await.unwrap().as_deref(),
        Some("https://example.com/lora-notes")
    );
    assert_eq!(link.text().await.unwrap(), "https://example.com/lora-notes");
    assert_nothing_injected(&c).await;
    // Escape closes it and gives the focus back to the citation.
    find(&c, "#passage")
        .await
        .send_keys(&char::from(Key::Escape).to_string())
        .await
        .unwrap();
    until(
        &c,
        "the passage to close",
        "document.getElementById('passage').hidden",
        5,
    )
    .await;
    assert_eq!(
        js(&c, "return document.activeElement.dataset.n;").await,
        json!(hostile_n)
    );

    // A source whose URL is javascript: is shown as text, not as a link.
    find(&c, &format!("#turns .cite[data-n='{js_n}']"))
        .await
        .click()
        .await
        .unwrap();
    until(
        &c,
        "the second passage",
        "!document.getElementById('passage').hidden",
        5,
    )
    .await;
    assert!(find(&c, "#passage-link")
        .await
        .attr("href")
        .await
        .unwrap()
        .is_none());
    assert!(text(&c, "#passage-text").await.contains("rank of 8 or 16"));

    // The retrieved passages are listed, the cited ones marked.
    let listed = js(&c, "return [...document.querySelectorAll('#results > li')].map(li => [li.dataset.n, li.classList.contains('cited'), li.textContent]);").await;
    let listed = listed.as_array().unwrap();
    assert!(listed.len() >= 3, "{listed:?}");
    let hostile_item = listed
        .iter()
        .find(|l| l[0] == json!(hostile_n))
        .expect("hostile passage listed");
    assert_eq!(hostile_item[1], true);
    assert!(hostile_item[2].as_str().unwrap().contains(HOSTILE_TEXT));
    assert_nothing_injected(&c).await;

    // A follow-up sends the first turn along.
    let q = find(&c, "#q").await;
    q.send_keys(&format!(
        "And which rank is usual?{}",
        char::from(Key::Enter)
    ))
    .await
    .unwrap();
    until(&c, "the second answer", "document.querySelectorAll('#turns > li').length == 2 && document.querySelector('#turns li:last-child .a[aria-busy=false]')", 60).await;
    let searched = text(&c, "#turns li:last-child").await;
    assert!(searched.contains(STANDALONE), "{searched}");
    let sent = upstream.requests().last().unwrap().json();
    let messages = sent["messages"].as_array().unwrap();
    assert!(
        messages
            .iter()
            .any(|m| m["role"] == "assistant" && m["content"] == full.as_str()),
        "the first answer was not sent as history: {messages:?}"
    );
    assert!(messages
        .iter()
        .any(|m| m["role"] == "user" && m["content"] == QUESTION));

    // Search only, lexical: passages without an answer.
    let asked = upstream.requests().len();
    find(&c, "input[name=kind][value=search]")
        .await
        .click()
        .await
        .unwrap();
    assert_eq!(text(&c, "#send").await, "Search");
    find(&c, "#mode")
        .await
        .select_by_value("lexical")
        .await
        .unwrap();
    let q = find(&c, "#q").await;
    q.clear().await.unwrap();
    q.send_keys(&format!("tomato seedlings{}", char::from(Key::Enter)))
        .await
        .unwrap();
    until(
        &c,
        "search results",
        "/passages found/.test(document.getElementById('status').textContent)",
        20,
    )
    .await;
    let first = text(&c, "#results > li:first-child").await;
    assert!(first.contains("Growing tomatoes"), "{first}");
    assert_eq!(
        upstream.requests().len(),
        asked,
        "search-only asked the model"
    );
    q.clear().await.unwrap();
    q.send_keys(&format!("onerror script{}", char::from(Key::Enter)))
        .await
        .unwrap();
    until(
        &c,
        "hostile search results",
        "/LoRA field notes/.test(document.getElementById('results').textContent)",
        20,
    )
    .await;
    assert!(text(&c, "#results").await.contains(HOSTILE_TEXT));
    assert_nothing_injected(&c).await;

    // 中文: the labels switch, and the choice is kept.
    find(&c, "#lang").await.click().await.unwrap();
    assert_eq!(
        js(&c, "return document.documentElement.lang;").await,
        "zh-CN"
    );
    assert_eq!(text(&c, "#results-h").await, "检索到的段落");
    assert_eq!(text(&c, "label[for=q]").await, "问题");
    c.refresh().await.unwrap();
    until(&c, "the page again", "document.getElementById('q')", 10).await;
    assert_eq!(text(&c, "#send").await, "提问");

    // The key never shows in the page.
    let page = js(
        &c,
        "return document.documentElement.outerHTML + document.body.innerText;",
    )
    .await;
    assert!(!page.as_str().unwrap().contains(KEY));
    assert!(!served.stderr().contains(KEY));

    c.close().await.unwrap();
    drop(driver);
}
