//! Starting the real app on port 0 against a fresh database, and talking to it like Meta does.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use whatsapp_bridge::clock::Clock;
use whatsapp_bridge::config::{Config, LoadOptions};
use whatsapp_bridge::events::handlers::{CallEvents, MessageEvents};
use whatsapp_bridge::store::{EventCounts, SqlStore, Store};
use whatsapp_bridge::telemetry::Metrics;
use whatsapp_bridge::whatsapp::signature;
use whatsapp_bridge::App;

pub const APP_SECRET: &str = "test-app-secret";
pub const VERIFY_TOKEN: &str = "test-verify-token";
/// The business number in the fixtures.
pub const PHONE_NUMBER_ID: &str = "106540352242922";
/// The user in the fixtures.
pub const USER_WA_ID: &str = "16505551234";

/// Logs go nowhere unless `TEST_LOG` is set.
pub fn init_test_logging() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(
                    std::env::var("TEST_LOG")
                        .ok()
                        .filter(|v| !v.is_empty() && v != "1")
                        .unwrap_or_else(|| "info".to_owned()),
                )
                .with_test_writer()
                .try_init();
        }
    });
}

/// A fresh database for one test: a temporary SQLite file, or a new Postgres database that is
/// dropped afterwards.
pub enum TestDb {
    Sqlite(tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

impl TestDb {
    pub fn sqlite() -> Self {
        TestDb::Sqlite(tempfile::tempdir().expect("temp dir"))
    }

    /// Creates a database on the test Postgres (`TEST_POSTGRES_URL`, default the machine's
    /// trust-auth server on 127.0.0.1:5432). A missing Postgres fails the test loudly: these
    /// tests never skip.
    pub async fn postgres() -> Self {
        let admin_url = postgres_admin_url();
        let name = format!("wb_test_{}", uuid::Uuid::new_v4().simple());
        let mut connection = connect_admin(&admin_url).await;
        sqlx::query(&format!("create database {name}"))
            .execute(&mut connection)
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name} on {admin_url}: {e}"));
        TestDb::Postgres { admin_url, name }
    }

    pub fn url(&self) -> String {
        match self {
            TestDb::Sqlite(dir) => format!("sqlite://{}/bridge.db", dir.path().display()),
            TestDb::Postgres { admin_url, name } => {
                let mut url = reqwest::Url::parse(admin_url).expect("admin url");
                url.set_path(name);
                url.to_string()
            }
        }
    }

    /// A store on this database, migrated (for tests that need no app).
    pub async fn store(&self) -> Arc<dyn Store> {
        let config = config_with(self, &[]);
        let store = SqlStore::connect(&config.database).await.expect("connect");
        store.migrate().await.expect("migrate");
        Arc::new(store)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { admin_url, name } = self {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs outside async; a short-lived runtime on its own thread does the work.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async {
                    let mut connection = connect_admin(&admin_url).await;
                    let _ = sqlx::query(&format!("drop database if exists {name} with (force)"))
                        .execute(&mut connection)
                        .await;
                });
            })
            .join();
        }
    }
}

pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

async fn connect_admin(admin_url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Postgres is not reachable at {admin_url} ({e}).\n\
             The test suite runs every storage test on Postgres too and does not skip them.\n\
             Run scripts/test.sh (it starts a local Postgres when none is running), or point \
             TEST_POSTGRES_URL at a server where this user may create databases."
            )
        })
}

/// The test configuration: everything WhatsApp needs, a fake Graph URL nobody listens on,
/// port 0 on loopback; `overrides` win.
pub fn config_with(db: &TestDb, overrides: &[(&str, &str)]) -> Config {
    config_without(db, overrides, &[])
}

/// [`config_with`], without the settings named in `unset` (a service not configured for them).
pub fn config_without(db: &TestDb, overrides: &[(&str, &str)], unset: &[&str]) -> Config {
    let url = db.url();
    let mut env: Vec<(String, String)> = [
        ("DATABASE_URL", url.as_str()),
        ("PORT", "0"),
        ("BIND_ADDRESS", "127.0.0.1"),
        ("WHATSAPP_APP_SECRET", APP_SECRET),
        ("WHATSAPP_VERIFY_TOKEN", VERIFY_TOKEN),
        ("WHATSAPP_ACCESS_TOKEN", "test-access-token"),
        ("WHATSAPP_PHONE_NUMBER_ID", PHONE_NUMBER_ID),
        ("WHATSAPP_GRAPH_URL", "http://127.0.0.1:9"),
        ("INSTANCE_ID", "test-instance"),
        ("RTC_UDP_PORT", "0"),
        ("RTC_BIND_ADDRESS", "127.0.0.1"),
        ("STUN_SERVER", "none"),
        ("SHUTDOWN_TIMEOUT_SECS", "10"),
        ("DATABASE_MAX_CONNECTIONS", "5"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in overrides {
        env.retain(|(name, _)| name != k);
        env.push(((*k).to_owned(), (*v).to_owned()));
    }
    env.retain(|(name, _)| !unset.contains(&name.as_str()));
    Config::load(&LoadOptions::default(), env).expect("test configuration is valid")
}

/// How to start a test app.
#[derive(Default)]
pub struct Options {
    pub env: Vec<(&'static str, String)>,
    pub clock: Option<Arc<dyn Clock>>,
    pub calls: Option<Arc<dyn CallEvents>>,
    pub messages: Option<Arc<dyn MessageEvents>>,
    pub sweep_interval: Option<Duration>,
    /// Settings the test configuration has that this app must not (e.g. no WhatsApp at all).
    pub unset: Vec<&'static str>,
}

/// A running app.
pub struct TestApp {
    pub addr: SocketAddr,
    /// Where call media goes (the host candidate).
    pub media_addr: SocketAddr,
    /// The fake Graph API the app talks to.
    pub graph: fakes::graph::FakeGraph,
    pub client: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub metrics: Metrics,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

/// Starts the app on a fresh SQLite database with the built-in handlers.
pub async fn spawn_app(db: &TestDb) -> TestApp {
    spawn_app_with(db, Options::default()).await
}

pub async fn spawn_app_with(db: &TestDb, options: Options) -> TestApp {
    init_test_logging();
    let graph = fakes::graph::FakeGraph::start().await;
    let mut overrides: Vec<(&str, &str)> = vec![("WHATSAPP_GRAPH_URL", graph.url.as_str())];
    overrides.extend(options.env.iter().map(|(k, v)| (*k, v.as_str())));
    let config = config_without(db, &overrides, &options.unset);
    let mut builder = App::builder(config);
    if let Some(clock) = options.clock {
        builder = builder.clock(clock);
    }
    if let Some(calls) = options.calls {
        builder = builder.call_events(calls);
    }
    if let Some(messages) = options.messages {
        builder = builder.message_events(messages);
    }
    if let Some(interval) = options.sweep_interval {
        builder = builder.sweep_interval(interval);
    }
    let app = builder.build().await.expect("app builds");
    let addr = app.http_addr();
    let media_addr = app.media_addr();
    let store = app.store();
    let metrics = app.metrics();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(app.run_until_stopped(shutdown.clone().cancelled_owned()));
    TestApp {
        addr,
        media_addr,
        graph,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
        store,
        metrics,
        shutdown,
        handle,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    /// POSTs `body` signed with the app secret, as Meta does.
    pub async fn post_webhook(&self, body: &str) -> reqwest::Response {
        let signature = signature::sign(APP_SECRET.as_bytes(), body.as_bytes());
        self.post_webhook_with(body.as_bytes().to_vec(), Some(&signature))
            .await
    }

    /// POSTs raw bytes with the given signature header (or none).
    pub async fn post_webhook_with(
        &self,
        body: Vec<u8>,
        signature: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url("/whatsapp-call"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        request.send().await.expect("request")
    }

    /// Waits until no stored event is pending (processing is asynchronous), then returns the
    /// counts. Polls the store; fails after 20 s.
    pub async fn processed(&self) -> EventCounts {
        wait_until_processed(self.store.as_ref()).await
    }

    /// Waits until the call WhatsApp knows as `wa_call_id` satisfies `done` (calls move on
    /// in their own tasks, after their webhooks are processed). Fails after 20 s.
    pub async fn call_when(
        &self,
        wa_call_id: &str,
        done: impl Fn(&whatsapp_bridge::store::CallRecord) -> bool,
    ) -> whatsapp_bridge::store::CallRecord {
        let wa = whatsapp_bridge::domain::WaCallId::parse(wa_call_id).expect("id");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let call = self.store.call_by_wa_id(&wa).await.expect("query");
            if let Some(call) = call.filter(|c| done(c)) {
                return call;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "call {wa_call_id} did not get there in 20 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the app as SIGTERM would and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.handle.await.expect("app task")
    }
}

pub async fn wait_until_processed(store: &dyn Store) -> EventCounts {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let counts = store.webhook_event_counts().await.expect("counts");
        if counts.pending == 0 {
            return counts;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "events still pending after 20 s: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fixture from `tests/fixtures/webhooks`.
pub fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/webhooks/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

/// A text message webhook with its own wamid.
pub fn text_message(wamid: &str, text: &str) -> String {
    serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
            "contacts": [{"profile": {"name": "Kerry Fisher"}, "wa_id": USER_WA_ID}],
            "messages": [{"from": USER_WA_ID, "id": wamid, "timestamp": "1764182400", "type": "text", "text": {"body": text}}]
        }}]}]
    })
    .to_string()
}

/// A delivery status webhook for `wamid`.
pub fn status_webhook(wamid: &str, status: &str) -> String {
    serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
            "statuses": [{"id": wamid, "status": status, "timestamp": "1764182401", "recipient_id": USER_WA_ID}]
        }}]}]
    })
    .to_string()
}
