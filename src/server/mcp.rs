//! The Model Context Protocol: the knowledge base as tools that MCP clients
//! (Claude Desktop, Cursor, VS Code, Cherry Studio, Open WebUI, coding agents)
//! call: `search`, `fetch` and, when a chat model is configured, `ask`.
//! `ragmap mcp` serves them on stdin/stdout ([`serve_stdio`]), `ragmap serve`
//! over Streamable HTTP at `/mcp` ([`http_service`]).
//!
//! The official SDK (rmcp) speaks the protocol: revision 2026-07-28 (no
//! handshake: `server/discover`, the version in each request's `_meta`) and
//! the handshake era before it (`initialize`, 2024-11-05 to 2025-11-25).
//! The tools only read: each calls the retrieval and answering steps the rest
//! of the server calls, on the server's retrieval workers (one for stdio).

use std::sync::Arc;
use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{schemars, tool, tool_handler, tool_router, ServerHandler, ServiceExt};
use serde::{Deserialize, Serialize};

use super::workers::{Admission, Workers};
use super::ServeError;
use crate::answer::{Answerer, Preparation, Prepared};
use crate::cite::Citations;
use crate::config::{Config, Retrieve, RetrieveMode};
use crate::llm::{ChatOutcome, LlmError};
use crate::prompt::Source;
use crate::query::Query;
use crate::retrieve::{Hit, Retriever};

/// What the tools read: retrieval workers, the chat model if any, the limits.
pub struct Knowledge {
    pub workers: Arc<Workers>,
    /// Present when a chat model is configured: then `ask` is offered.
    pub answerer: Option<Arc<Answerer>>,
    /// The HTTP server's request limit (stdio has one client, no limit).
    pub admission: Option<Admission>,
    pub settings: Retrieve,
    pub max_question_chars: usize,
    /// Longest an `ask` may take.
    pub timeout: Duration,
}

/// The MCP server: one per stdio connection, one per HTTP request.
#[derive(Clone)]
pub struct Tools {
    knowledge: Arc<Knowledge>,
    tool_router: ToolRouter<Tools>,
}

/// Most passages one `search` returns.
const MAX_K: usize = 50;
/// Characters of a passage in a search result; `fetch` gives the rest.
const SNIPPET_CHARS: usize = 400;

const INSTRUCTIONS: &str = "ragmap answers from a local knowledge base: the resources of an AI-engineering \
learning roadmap (LLM basics, RAG, agents, fine-tuning, deployment) and the user's own notes, in Chinese \
and English. Call `search` first, then `fetch` with a result's id to read a passage in full; cite the \
title and URL. ragmap 是本地知识库（AI 工程学习路线的资料和用户笔记，中英文）：先用 search 检索，再用 fetch \
读取段落全文，引用标题和链接。";

/// `search`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SearchArgs {
    /// The question or keywords, in Chinese or English; pages in either language are found.
    /// 要查找的问题或关键词，中文或英文均可（两种语言的页面都能找到）。
    pub query: String,
    /// How many passages to return, 1 to 50 (default: the configured `top_k`, 6 unless changed).
    /// 返回的段落数，1 到 50（默认为配置的 top_k，通常为 6）。
    // One plain type in the schema, not a nullable one: some clients map
    // schemas onto dialects with single types only.
    #[serde(default)]
    #[schemars(with = "u32", range(min = 1, max = 50))]
    pub k: Option<usize>,
    /// `hybrid` (default: meaning and exact words), `vector` (meaning) or `lexical` (exact
    /// words and names). 检索方式：hybrid（默认）、vector（语义）或 lexical（关键词）。
    #[serde(default)]
    #[schemars(with = "Mode")]
    pub mode: Option<Mode>,
}

#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Hybrid,
    Vector,
    Lexical,
}

impl From<Mode> for RetrieveMode {
    fn from(mode: Mode) -> RetrieveMode {
        match mode {
            Mode::Hybrid => RetrieveMode::Hybrid,
            Mode::Vector => RetrieveMode::Vector,
            Mode::Lexical => RetrieveMode::Lexical,
        }
    }
}

/// `search`'s result: the shape ChatGPT-style clients cite.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Found {
    pub results: Vec<Passage>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Passage {
    /// Pass to `fetch` for the full text. 传给 fetch 以读取全文。
    pub id: String,
    pub title: String,
    /// The page's URL; absent for the user's own notes (see `path`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub url: Option<String>,
    /// The document's path in the corpus.
    pub path: String,
    /// The headings above the passage, outermost first.
    pub heading: String,
    pub snippet: String,
    /// Higher is better (fused rank score in hybrid mode, cosine in vector, BM25 in lexical).
    pub score: f64,
}

/// `fetch`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct FetchArgs {
    /// A passage id from `search` results. search 结果中的段落 id。
    pub id: PassageId,
}

/// An id as `search` gives it (a string), or the number in it.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum PassageId {
    Text(String),
    Number(i64),
}

/// `fetch`'s result.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Document {
    pub id: String,
    pub title: String,
    /// The page's URL; absent for the user's own notes.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub url: Option<String>,
    pub path: String,
    pub heading: String,
    /// The passage with the text around it.
    pub text: String,
}

/// `ask`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct AskArgs {
    /// The question, in Chinese or English; the answer is in its language. 问题，中文或英文。
    pub question: String,
}

/// `ask`'s result.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Answered {
    /// The answer; `[n]` cites source n.
    pub answer: String,
    /// The passages the model was given; `cited` marks the ones the answer cites.
    pub sources: Vec<AnswerSource>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct AnswerSource {
    pub n: usize,
    /// A passage id for `fetch`.
    pub id: String,
    pub title: String,
    /// The page's URL; absent for the user's own notes.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub url: Option<String>,
    pub heading: String,
    pub snippet: String,
    pub cited: bool,
}

fn web_url(location: &str) -> Option<String> {
    (location.starts_with("http://") || location.starts_with("https://"))
        .then(|| location.to_string())
}

impl Passage {
    fn of(hit: &Hit) -> Passage {
        let c = &hit.chunk;
        Passage {
            id: c.id.to_string(),
            title: c.title.clone(),
            url: web_url(&c.source),
            path: c.path.clone(),
            heading: c.heading.clone(),
            snippet: crate::term::snippet(&c.text, SNIPPET_CHARS),
            // Six decimals: the f32 widened to JSON's f64 would print noise digits.
            score: (f64::from(hit.score) * 1e6).round() / 1e6,
        }
    }
}

#[tool_router]
impl Tools {
    /// The tools over `knowledge`; `ask` only with a chat model.
    pub fn new(knowledge: Arc<Knowledge>) -> Tools {
        let mut tool_router = Self::tool_router();
        if knowledge.answerer.is_none() {
            tool_router.remove_route("ask");
        }
        Tools {
            knowledge,
            tool_router,
        }
    }

    #[tool(
        name = "search",
        description = "Search the ragmap knowledge base (an AI-engineering learning roadmap's resources: \
LLM basics, RAG, agents, fine-tuning, deployment; and the user's own notes) for passages matching a \
question or keywords, Chinese or English. Returns id, title, URL, heading, snippet and score of each; \
`fetch` an id for the full text. 在 ragmap 知识库（AI 工程学习路线资料与个人笔记，中英文）中检索与问题或关键词最相关的段落，\
返回 id、标题、链接、小标题、摘要和分数；用 fetch 读取全文。",
        annotations(
            title = "Search the knowledge base / 检索知识库",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn search(
        &self,
        Parameters(args): Parameters<SearchArgs>,
    ) -> Result<Json<Found>, String> {
        let k = &self.knowledge;
        let _ticket = k.admit()?;
        let question = k.question(&args.query, "query")?;
        let mut settings = k.settings.clone();
        if let Some(n) = args.k {
            if n == 0 || n > MAX_K {
                return Err(format!("\"k\" is 1 to {MAX_K}, not {n}"));
            }
            settings.top_k = n;
        }
        if let Some(mode) = args.mode {
            settings.mode = mode.into();
        }
        let query = Query::new(question);
        let hits = k
            .workers
            .run(move |r| r.search_with(&query, &settings, false))
            .await
            .map_err(|e| e.message().to_string())?
            .map_err(|e| format!("search failed: {e}"))?;
        Ok(Json(Found {
            results: hits.iter().map(Passage::of).collect(),
        }))
    }

    #[tool(
        name = "fetch",
        description = "Read one passage found by `search` in full: its document's title, URL and heading \
path, and the text around it. Use it when a snippet is not enough. 读取 search 找到的某个段落的全文：\
文档标题、链接、小标题路径和上下文。",
        annotations(
            title = "Read a passage / 读取段落",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn fetch(
        &self,
        Parameters(args): Parameters<FetchArgs>,
    ) -> Result<Json<Document>, String> {
        let k = &self.knowledge;
        let _ticket = k.admit()?;
        let id = match &args.id {
            PassageId::Number(n) => *n,
            PassageId::Text(t) => t.trim().parse::<i64>().map_err(|_| {
                format!("{t:?} is not a passage id: use an id from `search` results")
            })?,
        };
        let radius = k.settings.neighbours.max(1);
        let row = k
            .workers
            .run(move |r| r.chunk(id, radius))
            .await
            .map_err(|e| e.message().to_string())?
            .map_err(|e| format!("reading the passage failed: {e}"))?
            .ok_or_else(|| {
                format!(
                    "no passage has id {id} (the index changed since that search?): search again"
                )
            })?;
        Ok(Json(Document {
            id: row.id.to_string(),
            title: row.title,
            url: web_url(&row.source),
            path: row.path,
            heading: row.heading,
            text: row.text,
        }))
    }

    #[tool(
        name = "ask",
        description = "Answer a question from the knowledge base with ragmap's own chat model: a grounded \
answer citing its sources as [n], and the sources. Slower than `search`; use it for a finished answer \
rather than passages. 用 ragmap 配置的大模型根据知识库回答问题：答案以 [n] 引用来源，并列出来源。比 search 慢。",
        output_schema = rmcp::handler::server::common::schema_for_output::<Answered>(),
        annotations(
            title = "Answer from the knowledge base / 基于知识库回答",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn ask(&self, Parameters(args): Parameters<AskArgs>) -> CallToolResult {
        match self.knowledge.ask(&args.question).await {
            Ok(answered) => {
                let text = answer_text(&answered);
                let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
                result.structured_content = serde_json::to_value(&answered).ok();
                result
            }
            Err(message) => CallToolResult::error(vec![ContentBlock::text(message)]),
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::from_build_env())
            .with_instructions(INSTRUCTIONS.to_string())
    }
}

impl Knowledge {
    /// The tools' view of `workers` with `config`'s settings and limits.
    pub fn new(
        config: &Config,
        workers: Arc<Workers>,
        answerer: Option<Arc<Answerer>>,
        admission: Option<Admission>,
    ) -> Knowledge {
        Knowledge {
            workers,
            answerer,
            admission,
            settings: config.retrieve.clone(),
            max_question_chars: config.server.max_question_chars,
            timeout: super::request_timeout(config),
        }
    }

    fn admit(&self) -> Result<Option<super::workers::Ticket>, String> {
        self.admission
            .as_ref()
            .map(Admission::admit)
            .transpose()
            .map_err(|e| e.message().to_string())
    }

    /// The question trimmed; an empty or too long one is an error naming `field`.
    fn question<'q>(&self, text: &'q str, field: &str) -> Result<&'q str, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err(format!("\"{field}\" is empty"));
        }
        let max = self.max_question_chars;
        if text.chars().count() > max {
            return Err(format!(
                "\"{field}\" is longer than {max} characters ([server] max_question_chars)"
            ));
        }
        Ok(text)
    }

    async fn ask(&self, question: &str) -> Result<Answered, String> {
        let answerer = self
            .answerer
            .as_ref()
            .ok_or("no chat model is configured: use `search` instead")?;
        let _ticket = self.admit()?;
        let question = self.question(question, "question")?;
        let answering = grounded_answer(answerer, &self.workers, question);
        let (prepared, outcome) = tokio::time::timeout(self.timeout, answering)
            .await
            .map_err(|_| {
                format!(
                    "the answer took longer than {:.0} s ([server] request_timeout_secs)",
                    self.timeout.as_secs_f64()
                )
            })??;
        let citations = Citations::of(&outcome.text, &prepared.prompt.sources);
        let cited: Vec<usize> = citations.cited.iter().map(|s| s.number).collect();
        let mut answer = outcome.text;
        if let Some(what) = &outcome.stopped {
            answer = format!(
                "{}\n\n(ragmap stopped the answer here because it kept repeating itself: {what})",
                answer.trim_end()
            );
        }
        Ok(Answered {
            answer,
            sources: prepared
                .prompt
                .sources
                .iter()
                .map(|s| answer_source(s, cited.contains(&s.number)))
                .collect(),
        })
    }
}

/// One question answered the way `/v1/chat/completions` answers it: the
/// query (translated when configured), its passages, the prompt (refitted
/// when the server refused it as too long), the model's whole answer (what
/// was kept, when the guard stopped it repeating itself).
async fn grounded_answer(
    answerer: &Answerer,
    workers: &Workers,
    question: &str,
) -> Result<(Prepared, ChatOutcome), String> {
    let passages = async |query: &Query| workers.passages(query).await;
    let mut prepared = match answerer.prepare(&[], question, passages).await {
        Ok(Preparation::Ready(prepared)) => prepared,
        Ok(Preparation::NoModel(_, e)) => return Err(model_failed(answerer, &e)),
        Err(e) => return Err(e.message().to_string()),
    };
    let mut sink = |_: &str| {};
    let started = std::time::Instant::now();
    let answered = answerer.answer(&mut prepared, &[], &mut sink).await;
    let outcome =
        crate::llm::guard::kept(answered, started).map_err(|e| model_failed(answerer, &e))?;
    Ok((prepared, outcome))
}

fn model_failed(answerer: &Answerer, e: &LlmError) -> String {
    if e.is_unreachable() {
        format!(
            "no chat model answered at {}: {e}; start one or use `search` instead",
            answerer.backend().base_url()
        )
    } else {
        format!("the chat model failed: {e}")
    }
}

fn answer_source(s: &Source, cited: bool) -> AnswerSource {
    AnswerSource {
        n: s.number,
        id: s.chunk_id.to_string(),
        title: s.title.clone(),
        url: web_url(&s.location),
        heading: s.heading.clone(),
        snippet: crate::term::snippet(&s.text, SNIPPET_CHARS),
        cited,
    }
}

/// The answer with its cited sources (all, when it cites none) as lines.
fn answer_text(answered: &Answered) -> String {
    let mut text = answered.answer.trim_end().to_string();
    let any_cited = answered.sources.iter().any(|s| s.cited);
    text.push_str("\n\nSources:");
    for s in answered.sources.iter().filter(|s| s.cited || !any_cited) {
        let location = s.url.as_deref().unwrap_or(&s.title);
        text.push_str(&format!("\n[{}] {} — {location}", s.n, s.title));
    }
    text
}

/// `/mcp`'s service type.
pub type HttpService = StreamableHttpService<Tools, NeverSessionManager>;

/// `/mcp`: the tools over Streamable HTTP. Stateless (no sessions to keep
/// or leak), JSON responses; the `Host` and `Origin` checks guard a
/// loopback server against DNS rebinding and foreign web pages (403).
/// `allowed_hosts`: `None` accepts any `Host`.
pub fn http_service(
    knowledge: Arc<Knowledge>,
    allowed_hosts: Option<Vec<String>>,
    allowed_origins: Vec<String>,
    max_body_bytes: usize,
) -> HttpService {
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_max_request_body_bytes(max_body_bytes)
        .with_allowed_origins(allowed_origins)
        .enforce_origin_validation();
    config = match allowed_hosts {
        Some(hosts) => config.with_allowed_hosts(hosts),
        None => config.disable_allowed_hosts(),
    };
    let tools = Tools::new(knowledge);
    StreamableHttpService::new(move || Ok(tools.clone()), Default::default(), config)
}

/// `ragmap mcp`: loads the index and model once, then serves the tools on
/// stdin/stdout until the client closes stdin. Nothing but protocol goes to
/// stdout.
pub async fn serve_stdio(config: Config, ask: bool) -> Result<(), ServeError> {
    let mut with_model = config.clone();
    with_model.retrieve.mode = RetrieveMode::Hybrid;
    let mut retriever = tokio::task::spawn_blocking(move || Retriever::open(&with_model))
        .await
        .map_err(|e| ServeError::Run(std::io::Error::other(e)))??;
    retriever.set_settings(config.retrieve.clone());
    let answerer = if ask {
        Some(Arc::new(Answerer::from_config(
            &config,
            config.llm.rewrite,
        )?))
    } else {
        None
    };
    let workers = Arc::new(Workers::new(vec![retriever]));
    let knowledge = Arc::new(Knowledge::new(&config, workers, answerer, None));
    let running = Tools::new(knowledge)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| ServeError::Run(std::io::Error::other(e.to_string())))?;
    running
        .waiting()
        .await
        .map_err(|e| ServeError::Run(std::io::Error::other(e.to_string())))?;
    Ok(())
}
