//! Test harness: fresh databases and a running gateway.

use std::net::TcpListener;
use std::time::Instant;

use medgate::app::Gateway;
use medgate::config::{BodyPolicy, ClientSettings, Secret, Settings};
use medgate::model::time::SharedClock;
use medgate::store::{Backend, Store};

/// The PostgreSQL server the tests use (trust auth); override with `MEDGATE_TEST_PG`.
pub fn pg_admin_url() -> String {
    std::env::var("MEDGATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A database created for one test and dropped afterwards.
pub struct TestDb {
    /// URL of the fresh database.
    pub url: String,
    backend: Backend,
    name: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// Creates a fresh database; panics (fails the test) when PostgreSQL is unreachable.
    pub async fn new(backend: Backend) -> TestDb {
        capture_logs();
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                TestDb {
                    url,
                    backend,
                    name: String::new(),
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                use sqlx::Connection;
                let admin = pg_admin_url();
                let name = format!("medgate_t_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL at {admin} is not reachable ({e}); store tests need it — start it with `pg_ctlcluster --skip-systemctl-redirect 15 main start`")
                });
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let _ = conn.close().await;
                let mut u = url::Url::parse(&admin).expect("admin url");
                u.set_path(&format!("/{name}"));
                TestDb {
                    url: u.to_string(),
                    backend,
                    name,
                    _dir: None,
                }
            }
        }
    }

    /// A connected, migrated store on this database.
    pub async fn store(&self) -> Store {
        let mut s = Settings::default();
        s.database.url = self.url.clone();
        s.database.max_connections = 8;
        let store = Store::connect(&s.database).await.expect("connect");
        store.migrate().await.expect("migrate");
        store
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.backend != Backend::Postgres {
            return;
        }
        let name = self.name.clone();
        // Drop runs inside the test's runtime; use a separate thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// Where the tests' processes write their logs (one file per process), for the scan of
/// `logs.rs`; `tests/run.sh` empties it before the suite.
pub fn log_dir() -> std::path::PathBuf {
    std::env::var_os("GATEWAY_TEST_LOGS")
        .map(Into::into)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-logs"))
}

/// This process's log file.
pub fn log_file() -> std::path::PathBuf {
    log_dir().join(format!("{}.jsonl", std::process::id()))
}

/// Sends this process's logs (the gateway's and the simulators', at debug) to
/// [`log_file`], once.
pub fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let dir = log_dir();
        std::fs::create_dir_all(&dir).expect("log dir");
        let file = std::fs::File::create(log_file()).expect("log file");
        medgate::telemetry::init_json_to(
            "info,medgate=debug,sqlx=warn",
            std::sync::Mutex::new(file),
        );
    });
}

/// Waits (polling, at most 15 seconds) until `ready` holds: for effects that happen in the
/// background (a delivery, a callback), never for time to pass.
pub async fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + std::time::Duration::from_secs(15);
    while !ready() {
        assert!(Instant::now() < deadline, "waited in vain for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Bearer token of the test admin client.
pub const ADMIN_TOKEN: &str = "test-admin-token";
/// Bearer token of a client without admin scopes.
pub const PORTAL_TOKEN: &str = "test-portal-token";
/// Bearer token of a clinic acting for [`CLINIC_ORG`].
pub const CLINIC_TOKEN: &str = "test-clinic-token";
/// Bearer token the registry simulator uses for callbacks and file fetches.
pub const REMD_TOKEN: &str = "test-remd-token";
/// Bearer token of the registry desk of [`CLINIC_ORG`]: books and records urgent visits there.
pub const DESK_TOKEN: &str = "test-desk-token";
/// The organization the test clinic acts for.
pub const CLINIC_ORG: &str = "1.2.643.5.1.13.13.12.2.77.7001";

/// An API client holding bearer `token`, acting for `orgs` with `scopes`.
pub fn client(id: &str, token: &str, orgs: &[&str], scopes: &[&str]) -> ClientSettings {
    ClientSettings {
        id: id.into(),
        name: id.into(),
        token_sha256: Secret::new(hex::encode(medgate::auth::token_hash(token))),
        organizations: orgs.iter().map(|s| s.to_string()).collect(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        channels: Vec::new(),
        rate: None,
        signing_certificate: None,
        certificate: None,
    }
}

/// Settings for a test gateway on `db`.
pub fn settings(db: &TestDb) -> Settings {
    let mut s = Settings::default();
    s.http.bind = "127.0.0.1:0".into();
    s.http.workers = 2;
    s.database.url = db.url.clone();
    s.database.max_connections = 8;
    s.transaction_log.default_bodies = BodyPolicy::Full;
    s.clients = vec![
        client("admin", ADMIN_TOKEN, &[], &["admin"]),
        client(
            "portal",
            PORTAL_TOKEN,
            &[],
            &["schedule:read", "appointment:write"],
        ),
        client(
            "clinic",
            CLINIC_TOKEN,
            &[CLINIC_ORG],
            &["documents:submit", "documents:read"],
        ),
        client("remd", REMD_TOKEN, &[], &["remd:callback"]),
        client("desk", DESK_TOKEN, &[CLINIC_ORG], &["appointment:write"]),
    ];
    s
}

/// A gateway running for one test.
pub struct TestGateway {
    /// The gateway.
    pub gw: Gateway,
    /// HTTP client.
    pub http: reqwest::Client,
    /// Keeps the database alive until the gateway is gone.
    pub db: TestDb,
}

impl TestGateway {
    /// Starts a gateway on a fresh database of `backend` with default test settings.
    pub async fn start(backend: Backend) -> TestGateway {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts with settings adjusted by `tweak`.
    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> TestGateway {
        Self::start_clocked(backend, medgate::model::time::system_clock(), tweak).await
    }

    /// Starts with settings adjusted by `tweak`, its services and jobs reading `clock`.
    pub async fn start_clocked(
        backend: Backend,
        clock: SharedClock,
        tweak: impl FnOnce(&mut Settings),
    ) -> TestGateway {
        let db = TestDb::new(backend).await;
        let mut s = settings(&db);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        s.http.public_url = Some(format!("http://{}", listener.local_addr().expect("addr")));
        tweak(&mut s);
        let store = db.store().await;
        medgate::demo::seed(&store).await.expect("seed");
        // A tweak may route the gateway to its database another way (through a proxy).
        let store = if s.database.url == db.url {
            store
        } else {
            Store::connect(&s.database).await.expect("connect")
        };
        let gw = Gateway::start_on(s, store, listener, clock)
            .await
            .expect("start gateway");
        TestGateway {
            gw,
            http: reqwest::Client::new(),
            db,
        }
    }

    /// Absolute URL of a path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gw.url())
    }

    /// GET with the admin token.
    pub async fn get_admin(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request")
    }

    /// POST a SOAP 1.1 message with the given action.
    pub async fn soap(&self, action: &str, body: &str) -> reqwest::Response {
        self.http
            .post(self.url("/soap/hub"))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "text/xml; charset=utf-8")
            .header("soapaction", format!("\"{action}\""))
            .body(body.to_string())
            .send()
            .await
            .expect("request")
    }

    /// Runs one step of the background job `name` by hand; what it handled.
    pub async fn step(&self, name: &str) -> usize {
        let job = self.gw.job(name).unwrap_or_else(|| panic!("no job {name}"));
        job.step().await.unwrap().handled
    }

    /// Stops the gateway and drops the database.
    pub async fn stop(self) {
        self.gw.stop().await;
        drop(self.db);
    }
}

/// `medgate demo` from the built binary, on free ports, its data in a directory of its own;
/// killed when dropped.
pub struct DemoProcess {
    /// The process.
    pub child: tokio::process::Child,
    /// The first region's gateway.
    pub port: u16,
    /// The second region's gateway.
    pub second: u16,
    _data: tempfile::TempDir,
}

/// Starts the demo binary (not yet ready: poll its `/readyz`).
pub fn spawn_demo() -> DemoProcess {
    let data = tempfile::tempdir().unwrap();
    let free = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (port, second) = (free(), free());
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_medgate"))
        .args(["demo", "--port", &port.to_string(), "--second-port"])
        .arg(second.to_string())
        .arg("--data-dir")
        .arg(data.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    DemoProcess {
        child,
        port,
        second,
        _data: data,
    }
}
