//! An external signing service simulator: holds keys by id and signs detached CMS over
//! HTTP, as a certified token or HSM gateway would. Faults: latency and outage.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::web::{self, Data, Json, Path};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine;
use serde::Deserialize;

use crate::sign::{LocalSigner, Signer};

struct State {
    token: String,
    keys: HashMap<String, LocalSigner>,
    down: AtomicBool,
    latency_ms: AtomicU64,
    signatures: AtomicU64,
}

/// A running signing service.
pub struct SignerSim {
    /// Base URL.
    pub url: String,
    state: Arc<State>,
    handle: ServerHandle,
}

#[derive(Deserialize)]
struct SignRequest {
    data: String,
    format: String,
}

fn authorized(state: &State, req: &HttpRequest) -> bool {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", state.token))
}

async fn key_info(state: Data<State>, req: HttpRequest, id: Path<String>) -> HttpResponse {
    if !authorized(&state, &req) {
        return HttpResponse::Unauthorized().finish();
    }
    match state.keys.get(id.as_str()) {
        Some(k) => HttpResponse::Ok().json(serde_json::json!({
            "certificate": base64::engine::general_purpose::STANDARD.encode(k.certificate_der()),
            "algorithm": k.algorithm(),
        })),
        None => HttpResponse::NotFound().json(serde_json::json!({"error": "no such key"})),
    }
}

async fn sign(
    state: Data<State>,
    req: HttpRequest,
    id: Path<String>,
    body: Json<SignRequest>,
) -> HttpResponse {
    let latency = state.latency_ms.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if state.down.load(Ordering::Relaxed) {
        return HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"error": "token not available"}));
    }
    if !authorized(&state, &req) {
        return HttpResponse::Unauthorized().finish();
    }
    if body.format != "cms-detached" && body.format != "raw" {
        return HttpResponse::BadRequest()
            .json(serde_json::json!({"error": "format must be cms-detached or raw"}));
    }
    let Some(key) = state.keys.get(id.as_str()) else {
        return HttpResponse::NotFound().json(serde_json::json!({"error": "no such key"}));
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let Ok(data) = b64.decode(body.data.as_bytes()) else {
        return HttpResponse::BadRequest().json(serde_json::json!({"error": "data is not base64"}));
    };
    let signed = if body.format == "raw" {
        key.sign_raw(&data)
    } else {
        key.sign_detached_cms(&data)
    };
    match signed {
        Ok(cms) => {
            state.signatures.fetch_add(1, Ordering::Relaxed);
            HttpResponse::Ok().json(
                serde_json::json!({"signature": b64.encode(cms), "algorithm": key.algorithm()}),
            )
        }
        Err(e) => {
            HttpResponse::InternalServerError().json(serde_json::json!({"error": e.to_string()}))
        }
    }
}

impl SignerSim {
    /// Starts on a random loopback port with keys by id and a bearer token.
    pub fn start(token: &str, keys: HashMap<String, LocalSigner>) -> std::io::Result<SignerSim> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            token: token.to_string(),
            keys,
            down: AtomicBool::new(false),
            latency_ms: AtomicU64::new(0),
            signatures: AtomicU64::new(0),
        });
        let data = Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::JsonConfig::default().limit(16 * 1024 * 1024))
                .route("/keys/{id}", web::get().to(key_info))
                .route("/keys/{id}/sign", web::post().to(sign))
        })
        .workers(1)
        .listen(listener)?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(SignerSim {
            url: format!("http://{addr}"),
            state,
            handle,
        })
    }

    /// Simulates the token being unavailable.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::Relaxed);
    }

    /// Adds latency to every signature.
    pub fn set_latency(&self, latency: Duration) {
        self.state
            .latency_ms
            .store(latency.as_millis() as u64, Ordering::Relaxed);
    }

    /// Signatures made so far.
    pub fn signatures(&self) -> u64 {
        self.state.signatures.load(Ordering::Relaxed)
    }

    /// Stops the service.
    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}
