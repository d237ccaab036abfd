//! Operators of the web dashboard: logins checked against argon2 password hashes from the
//! configuration, sessions kept in the database (only a SHA-256 of the session id), each
//! with its CSRF token, and the client principal a session acts as (the operator's scopes
//! and organizations), so every route's scope and organization rules hold for it alike.

use std::collections::HashMap;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordVerifier};

use crate::auth::Client;
use crate::config::DashboardSettings;
use crate::model::schedule::Channel;
use crate::model::time::SharedClock;
use crate::model::Oid;
use crate::store::sessions::SessionRow;
use crate::store::{Store, StoreError};

/// A session just begun: its id goes into the cookie, its CSRF token into every form.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The session id (the cookie's value; stored only as a hash).
    pub id: String,
    /// The CSRF token of its forms.
    pub csrf: String,
    /// Seconds it lasts.
    pub max_age_secs: u64,
}

/// A session found by its cookie.
#[derive(Debug, Clone)]
pub struct Session {
    /// The principal it acts as.
    pub client: Arc<Client>,
    /// The CSRF token its forms must carry.
    pub csrf: String,
}

/// Why a login failed (one message for every case: a wrong login and a wrong password look
/// alike).
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Unknown login or wrong password.
    #[error("wrong login or password")]
    Refused,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The operators and their sessions.
#[derive(Clone)]
pub struct Sessions {
    store: Store,
    operators: Arc<HashMap<String, (String, Arc<Client>)>>,
    ttl_ms: i64,
    clock: SharedClock,
}

/// A random token of 32 bytes, hex.
pub fn token() -> String {
    let mut b = [0u8; 32];
    // OpenSSL's generator: the process already links it for signatures.
    if openssl::rand::rand_bytes(&mut b).is_err() {
        b[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        b[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    hex::encode(b)
}

fn hash(id: &str) -> String {
    hex::encode(crate::auth::token_hash(id))
}

impl Sessions {
    /// The operators of `settings`; the error names the setting at fault.
    pub fn new(
        store: Store,
        settings: &DashboardSettings,
        clock: SharedClock,
    ) -> Result<Sessions, (String, String)> {
        let mut operators = HashMap::new();
        for (i, o) in settings.operators.iter().enumerate() {
            let at = |k: &str| format!("dashboard.operators[{i}].{k}");
            PasswordHash::new(&o.password_hash).map_err(|e| {
                (
                    at("password_hash"),
                    format!("not an argon2 PHC string: {e}"),
                )
            })?;
            let organizations = o
                .organizations
                .iter()
                .map(|org| {
                    Oid::parse_organization(org).map_err(|e| (at("organizations"), e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let client = Client {
                id: format!("operator:{}", o.login),
                name: if o.name.is_empty() {
                    o.login.clone()
                } else {
                    o.name.clone()
                },
                organizations,
                scopes: o.scopes.clone(),
                channels: vec![Channel::Registry],
                message_certificate: None,
                regions: Vec::new(),
            };
            if operators
                .insert(o.login.clone(), (o.password_hash.clone(), Arc::new(client)))
                .is_some()
            {
                return Err((at("login"), format!("{} appears twice", o.login)));
            }
        }
        Ok(Sessions {
            store,
            operators: Arc::new(operators),
            ttl_ms: i64::try_from(settings.session_minutes.max(1).saturating_mul(60_000))
                .unwrap_or(i64::MAX / 2),
            clock,
        })
    }

    /// Checks the operator's password and begins a session.
    pub async fn login(&self, login: &str, password: &str) -> Result<NewSession, LoginError> {
        let Some((phc, _)) = self.operators.get(login) else {
            return Err(LoginError::Refused);
        };
        // Deliberately slow (argon2): off the async workers.
        let (password, phc) = (password.to_string(), phc.clone());
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&phc).is_ok_and(|h| {
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        if !ok {
            return Err(LoginError::Refused);
        }
        let now = self.clock.now_ms();
        let s = NewSession {
            id: token(),
            csrf: token(),
            max_age_secs: u64::try_from(self.ttl_ms / 1000).unwrap_or(0),
        };
        self.store
            .insert_session(
                &hash(&s.id),
                &SessionRow {
                    login: login.to_string(),
                    csrf: s.csrf.clone(),
                    expires_at: now + self.ttl_ms,
                },
                now,
            )
            .await?;
        Ok(s)
    }

    /// The session of a cookie's id, while it lasts and its operator is still configured.
    pub async fn resolve(&self, id: &str) -> Result<Option<Session>, StoreError> {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let Some(row) = self.store.session(&hash(id), self.clock.now_ms()).await? else {
            return Ok(None);
        };
        Ok(self.operators.get(&row.login).map(|(_, client)| Session {
            client: client.clone(),
            csrf: row.csrf,
        }))
    }

    /// Ends a session.
    pub async fn logout(&self, id: &str) -> Result<(), StoreError> {
        self.store.delete_session(&hash(id)).await
    }
}

/// An argon2id hash of `password` in PHC form, for the configuration.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut salt = [0u8; 16];
    openssl::rand::rand_bytes(&mut salt).map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}
