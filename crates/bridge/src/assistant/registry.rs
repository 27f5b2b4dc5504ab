//! The registry: tool definitions for the model, and `invoke`, which turns the model's call
//! into an output it can read, whatever happens.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use super::schema;
use super::tools;
use super::when::{self, Tz};
use crate::clock::Clock;
use crate::domain::Source;
use crate::store::{Store, StoreError, User};

/// How long a tool may run before the model is told it timed out.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A tool as the model sees it. Provider-neutral: the realtime session and the text chat map
/// it into their own wire shapes (OpenAI: `{"type":"function", name, description,
/// parameters}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolDefinition {
    /// The name the model calls it by.
    pub name: &'static str,
    /// What it does and when to use it, for the model.
    pub description: String,
    /// The arguments: a JSON Schema object (`{"type":"object","properties":…,"required":…}`)
    /// with every subschema inline.
    pub parameters: Value,
}

/// Who is calling and through what: every tool acts for `user` only.
#[derive(Clone)]
pub struct ToolContext {
    /// Where the rows live.
    pub store: Arc<dyn Store>,
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
    /// The person the assistant is talking to, as stored. After a tool returns
    /// [`ToolEffect::UserUpdated`], replace it so later tools see the new settings.
    pub user: User,
    /// The channel (a voice call, a chat); recorded on the rows tools create.
    pub source: Source,
    /// Our id of the call, when this is one.
    pub call_id: Option<String>,
}

impl ToolContext {
    /// A context for `user` talking through `source`, outside a call.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, user: User, source: Source) -> Self {
        Self {
            store,
            clock,
            user,
            source,
            call_id: None,
        }
    }

    /// The same context inside the call `call_id`.
    pub fn with_call_id(mut self, call_id: impl Into<String>) -> Self {
        self.call_id = Some(call_id.into());
        self
    }
}

impl std::fmt::Debug for ToolContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolContext")
            .field("user", &self.user.id)
            .field("source", &self.source)
            .field("call_id", &self.call_id)
            .finish_non_exhaustive()
    }
}

/// What a tool call produced. Always something the model can read and say.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    /// JSON text for the model: `{"ok":true,…}` or `{"ok":false,"error":"…"}`.
    pub output: String,
    /// How it went, for metrics and logs.
    pub outcome: ToolOutcome,
    /// Something the caller must do besides answering the model.
    pub effect: Option<ToolEffect>,
}

/// How a tool call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolOutcome {
    /// Done.
    Ok,
    /// The arguments were not valid JSON, had the wrong shape, or asked for something
    /// impossible (a time in the past).
    BadArguments,
    /// No tool has that name.
    UnknownTool,
    /// The id named no row of this user.
    NotFound,
    /// The row is in a state that does not allow it (cancelling a cancelled reminder).
    Refused,
    /// The tool did not finish in time and was stopped.
    TimedOut,
    /// Our side failed (database, a bug).
    Failed,
}

impl ToolOutcome {
    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolOutcome::Ok => "ok",
            ToolOutcome::BadArguments => "bad_arguments",
            ToolOutcome::UnknownTool => "unknown_tool",
            ToolOutcome::NotFound => "not_found",
            ToolOutcome::Refused => "refused",
            ToolOutcome::TimedOut => "timed_out",
            ToolOutcome::Failed => "failed",
        }
    }
}

/// Side effects a tool asks its caller to carry out (the registry does not reach into calls or
/// sessions).
#[derive(Debug, Clone, PartialEq)]
pub enum ToolEffect {
    /// Hang up once the model has said goodbye.
    EndCall {
        /// Why, as the model put it.
        reason: Option<String>,
    },
    /// The user's settings changed: the new row, to put in [`ToolContext::user`] (and, for a
    /// changed language, in the session's instructions).
    UserUpdated(Box<User>),
}

/// The tools, built once and shared (cloning is cheap).
#[derive(Clone)]
pub struct ToolRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    entries: Vec<Entry>,
    definitions: Vec<ToolDefinition>,
    timeout: Duration,
    default_time_zone: Tz,
}

/// One registered tool: its definition and how to start it.
struct Entry {
    name: &'static str,
    filler: Option<&'static str>,
    start: StartFn,
}

/// Parses the arguments and returns the tool's work as a future to spawn.
type StartFn =
    fn(Invocation, &str) -> Result<BoxFuture<'static, Result<Reply, ToolError>>, ToolError>;

impl ToolRegistry {
    /// Every tool, with the default timeout and UTC for users without a time zone.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A registry to configure.
    pub fn builder() -> ToolRegistryBuilder {
        ToolRegistryBuilder::new()
    }

    /// The tools' definitions, to send to the model.
    pub fn definitions(&self) -> &[ToolDefinition] {
        &self.inner.definitions
    }

    /// The tools' names.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.inner.entries.iter().map(|entry| entry.name)
    }

    /// A short line the voice agent may say while this tool runs (for the slow ones).
    pub fn filler(&self, name: &str) -> Option<&str> {
        self.inner.entry(name).and_then(|entry| entry.filler)
    }

    /// How long a tool may run.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Runs the tool `name` with the model's `arguments` (a JSON object as text) for
    /// `ctx.user`. Never fails: bad arguments, unknown tools, timeouts and errors come back as
    /// an output the model can read and say.
    ///
    /// The tool runs on its own task, so a slow store never stalls the caller's loop beyond
    /// this future, which ends within the registry's timeout.
    pub async fn invoke(&self, ctx: &ToolContext, name: &str, arguments: &str) -> ToolResult {
        let started = Instant::now();
        let result = self.run(ctx, name, arguments).await;
        let reply = match result {
            Ok(reply) => ToolResult {
                output: reply.output.to_string(),
                outcome: ToolOutcome::Ok,
                effect: reply.effect,
            },
            Err(error) => {
                let outcome = error.outcome();
                // The detail stays in the log; the model gets a sentence it can say.
                if let ToolError::Store(_) | ToolError::Crashed(_) = &error {
                    tracing::warn!(
                        tool = name,
                        user_id = %ctx.user.id,
                        call_id = ctx.call_id.as_deref().unwrap_or("-"),
                        %error,
                        "tool failed"
                    );
                }
                ToolResult {
                    output: json!({"ok": false, "error": error.message(name)}).to_string(),
                    outcome,
                    effect: None,
                }
            }
        };
        // No arguments or outputs in logs: they hold what people said.
        tracing::debug!(
            tool = name,
            user_id = %ctx.user.id,
            call_id = ctx.call_id.as_deref().unwrap_or("-"),
            outcome = reply.outcome.as_str(),
            elapsed_ms = started.elapsed().as_millis(),
            "tool call"
        );
        reply
    }

    async fn run(
        &self,
        ctx: &ToolContext,
        name: &str,
        arguments: &str,
    ) -> Result<Reply, ToolError> {
        let entry = self
            .inner
            .entry(name)
            .ok_or_else(|| ToolError::UnknownTool {
                valid: self.names().collect::<Vec<_>>().join(", "),
            })?;
        let invocation = Invocation::new(ctx.clone(), self.inner.default_time_zone);
        let work = (entry.start)(invocation, arguments)?;
        let mut task = tokio::spawn(work);
        match tokio::time::timeout(self.inner.timeout, &mut task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join_error)) => Err(ToolError::Crashed(join_error.to_string())),
            Err(_elapsed) => {
                // Stop it: a write that has not happened yet should not happen after the
                // model was told it may not have.
                task.abort();
                Err(ToolError::TimedOut)
            }
        }
    }
}

impl Default for ToolRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolRegistry")
            .field("tools", &self.names().collect::<Vec<_>>())
            .field("timeout", &self.inner.timeout)
            .field("default_time_zone", &self.inner.default_time_zone.name())
            .finish()
    }
}

impl Inner {
    fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|entry| entry.name == name)
    }
}

/// Configures a [`ToolRegistry`].
pub struct ToolRegistryBuilder {
    entries: Vec<Entry>,
    definitions: Vec<ToolDefinition>,
    timeout: Duration,
    default_time_zone: Tz,
}

impl ToolRegistryBuilder {
    fn new() -> Self {
        let builder = Self {
            entries: Vec::new(),
            definitions: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            default_time_zone: Tz::UTC,
        };
        tools::register_all(builder)
    }

    /// How long any tool may run before the model is told it timed out (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The zone for users who have not set one (default UTC).
    pub fn default_time_zone(mut self, zone: Tz) -> Self {
        self.default_time_zone = zone;
        self
    }

    /// Adds the tool `T`.
    pub(crate) fn tool<T: Tool>(mut self) -> Self {
        debug_assert!(
            self.entries.iter().all(|entry| entry.name != T::NAME),
            "tool {} registered twice",
            T::NAME
        );
        self.definitions.push(schema::definition::<T>(T::NAME));
        self.entries.push(Entry {
            name: T::NAME,
            filler: T::FILLER,
            start: start::<T>,
        });
        self
    }

    /// The registry.
    pub fn build(self) -> ToolRegistry {
        ToolRegistry {
            inner: Arc::new(Inner {
                entries: self.entries,
                definitions: self.definitions,
                timeout: self.timeout,
                default_time_zone: self.default_time_zone,
            }),
        }
    }
}

fn start<T: Tool>(
    invocation: Invocation,
    arguments: &str,
) -> Result<BoxFuture<'static, Result<Reply, ToolError>>, ToolError> {
    // Some models send "" for a tool without parameters.
    let arguments = if arguments.trim().is_empty() {
        "{}"
    } else {
        arguments
    };
    let args: T = serde_json::from_str(arguments)
        .map_err(|error| ToolError::BadArguments(error.to_string()))?;
    Ok(Box::pin(async move { args.run(&invocation).await }))
}

/// A tool: its arguments (the type itself, whose doc comment is the description the model
/// reads and whose fields' doc comments describe the parameters) and what it does.
pub(crate) trait Tool: DeserializeOwned + JsonSchema + Send + 'static {
    /// The name the model calls.
    const NAME: &'static str;
    /// A line the voice agent may say while it runs, for tools that may take a moment.
    const FILLER: Option<&'static str> = None;
    /// Does the work for `call.ctx.user`.
    fn run(self, call: &Invocation) -> impl Future<Output = Result<Reply, ToolError>> + Send;
}

/// One tool call in progress: the context, the user's zone and the time it started at.
pub(crate) struct Invocation {
    /// The caller's context.
    pub ctx: ToolContext,
    /// The user's zone, or the registry's default.
    pub zone: Tz,
    /// When the call started; every time in one call is relative to this.
    pub now: DateTime<Utc>,
}

impl Invocation {
    fn new(ctx: ToolContext, default_zone: Tz) -> Self {
        let zone = match ctx.user.time_zone.as_deref().map(when::parse_time_zone) {
            Some(Ok(zone)) => zone,
            Some(Err(error)) => {
                tracing::warn!(user_id = %ctx.user.id, %error, "stored time zone is not valid; using the default");
                default_zone
            }
            None => default_zone,
        };
        let now = ctx.clock.now();
        Self { ctx, zone, now }
    }

    /// A UTC time as the user hears it, in their zone.
    pub fn local(&self, time: DateTime<Utc>) -> String {
        when::describe(self.zone, time)
    }
}

/// A tool's success: the output (an object; `"ok": true` is added) and any effect.
#[derive(Debug)]
pub(crate) struct Reply {
    output: Value,
    effect: Option<ToolEffect>,
}

impl Reply {
    /// `{"ok": true, …fields}`.
    pub fn ok(fields: Value) -> Self {
        let mut output = json!({"ok": true});
        if let (Value::Object(output), Value::Object(fields)) = (&mut output, fields) {
            output.extend(fields);
        }
        Self {
            output,
            effect: None,
        }
    }

    /// The same reply, asking the caller for `effect`.
    pub fn with_effect(mut self, effect: ToolEffect) -> Self {
        self.effect = Some(effect);
        self
    }
}

/// Why a tool call did not succeed. The message goes to the model, so it says what happened
/// and, where it can, what to do instead.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ToolError {
    /// The arguments did not parse or make sense.
    #[error("{0}")]
    BadArguments(String),
    /// No tool has the name.
    #[error("unknown tool")]
    UnknownTool {
        /// The names that exist.
        valid: String,
    },
    /// The id named nothing of this user's.
    #[error("{0}")]
    NotFound(String),
    /// Not possible in the row's current state.
    #[error("{0}")]
    Refused(String),
    /// The tool ran past the timeout.
    #[error("timed out")]
    TimedOut,
    /// The tool's task panicked or was cancelled.
    #[error("tool task ended abnormally: {0}")]
    Crashed(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ToolError {
    fn outcome(&self) -> ToolOutcome {
        match self {
            ToolError::BadArguments(_) => ToolOutcome::BadArguments,
            ToolError::UnknownTool { .. } => ToolOutcome::UnknownTool,
            ToolError::NotFound(_) => ToolOutcome::NotFound,
            ToolError::Refused(_) => ToolOutcome::Refused,
            ToolError::TimedOut => ToolOutcome::TimedOut,
            ToolError::Crashed(_) | ToolError::Store(_) => ToolOutcome::Failed,
        }
    }

    fn message(&self, tool: &str) -> String {
        match self {
            ToolError::BadArguments(reason) => format!(
                "The arguments for {tool} are not valid: {reason}. Fix them and call {tool} again."
            ),
            ToolError::UnknownTool { valid } => {
                let shown: String = tool.chars().take(64).collect();
                format!("There is no tool called {shown:?}. The tools are: {valid}.")
            }
            ToolError::NotFound(message) | ToolError::Refused(message) => message.clone(),
            ToolError::TimedOut => format!(
                "{tool} took too long and was stopped. It may or may not have gone through: check \
                 (for example by listing) before trying again, and tell the person it is slow right now."
            ),
            ToolError::Crashed(_) | ToolError::Store(_) => {
                "Something went wrong on our side and that could not be done right now. Say so, \
                 and offer to try again in a moment."
                    .to_owned()
            }
        }
    }
}
