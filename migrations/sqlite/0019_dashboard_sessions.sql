-- Sessions of the operators' web dashboard: only a SHA-256 of the session id is kept (a
-- stolen table opens no session), with the session's CSRF token and its end.
CREATE TABLE dashboard_sessions (
    id_hash TEXT PRIMARY KEY,
    login TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX dashboard_sessions_expiry ON dashboard_sessions (expires_at);
