//! Typed gateway settings: a TOML file overlaid with `MEDGATE_*` environment variables.
//!
//! Nested keys are reached from the environment with a double underscore:
//! `MEDGATE_DATABASE__URL` sets `database.url`, `MEDGATE_HTTP__BIND` sets `http.bind`.

use std::fmt;
use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// A secret string: usable by the code, never printed by `Debug` or `Display`.
#[derive(Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; call only where the value is actually used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"[redacted]\"")
    }
}

/// Every setting of one gateway process.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Name of this gateway instance (used in logs, metrics and federation).
    pub instance: String,
    /// HTTP listener.
    pub http: HttpSettings,
    /// Database connection.
    pub database: DatabaseSettings,
    /// Logging.
    pub log: LogSettings,
    /// Transaction log (message store) policy.
    pub transaction_log: TransactionLogSettings,
    /// API clients known to the gateway.
    #[serde(default)]
    pub clients: Vec<ClientSettings>,
    /// Registration of documents in the REMD registry; absent means documents are refused.
    #[serde(default)]
    pub remd: Option<RemdSettings>,
    /// Keys the gateway signs with, per organization and per doctor.
    #[serde(default)]
    pub signing: SigningSettings,
    /// The city-wide MIS (EMIAS-style) that owns schedules; absent means no schedule sync.
    #[serde(default)]
    pub emias: Option<EmiasSettings>,
    /// A clinic system speaking FHIR R4 that owns schedules of other clinics; absent means
    /// none.
    #[serde(default)]
    pub fhir_mis: Option<EmiasSettings>,
    /// Booking rules: holds, patient notifications.
    #[serde(default)]
    pub booking: BookingSettings,
    /// Referrals: validity, notifications, the targets' acceptance rules.
    #[serde(default)]
    pub referrals: ReferralSettings,
    /// The region this gateway serves and its peer gateways; absent: no federation (every
    /// organization is this gateway's).
    #[serde(default)]
    pub federation: Option<FederationSettings>,
    /// Scheduled jobs: their time zone, cron expressions, which are off.
    #[serde(default)]
    pub jobs: JobsSettings,
    /// How long what the gateway keeps is kept (the `retention` job prunes the rest).
    #[serde(default)]
    pub retention: RetentionSettings,
    /// The Ministry's reference-book service (NSI) and the books kept from it; absent: no
    /// sync, and documents and referrals are not checked against reference books.
    #[serde(default)]
    pub nsi: Option<NsiSettings>,
    /// Citizens' appeals: routing, deadlines, the working-day calendar, where answers and
    /// escalations go.
    #[serde(default)]
    pub appeals: AppealSettings,
    /// The operators' web dashboard at `/admin`: who may log in.
    #[serde(default)]
    pub dashboard: DashboardSettings,
}

/// The operators' web dashboard.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardSettings {
    /// Who may log in; none: the dashboard answers only clients with a bearer token.
    #[serde(default)]
    pub operators: Vec<OperatorSettings>,
    /// Minutes a session lasts.
    #[serde(default = "default_session_minutes")]
    pub session_minutes: u64,
    /// Mark the session cookie `Secure` (sent over HTTPS only; browsers treat
    /// `http://localhost` as secure too). Off only behind a TLS-terminating proxy that
    /// speaks plain HTTP to the browser, which it must not.
    #[serde(default = "default_true")]
    pub secure_cookie: bool,
}

/// One operator of the dashboard.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorSettings {
    /// The login.
    pub login: String,
    /// A name shown on the pages.
    #[serde(default)]
    pub name: String,
    /// The password's argon2 hash in PHC form (`$argon2id$v=19$...`; `medgate hash-password`
    /// makes one); never the password itself.
    pub password_hash: String,
    /// Scopes the operator's session holds (default: `admin`, every organization).
    #[serde(default = "default_operator_scopes")]
    pub scopes: Vec<String>,
    /// Organizations the operator acts for (with scopes other than `admin`).
    #[serde(default)]
    pub organizations: Vec<String>,
}

fn default_session_minutes() -> u64 {
    480
}

fn default_operator_scopes() -> Vec<String> {
    vec!["admin".into()]
}

impl Default for DashboardSettings {
    fn default() -> Self {
        DashboardSettings {
            operators: Vec::new(),
            session_minutes: default_session_minutes(),
            secure_cookie: true,
        }
    }
}

/// The federal reference-book service (FNSI REST, `/port/rest/...`) and the books the
/// `nsi-sync` job keeps, every version of each.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NsiSettings {
    /// Base URL of the service, e.g. `https://nsi.rosminzdrav.ru` (the gateway calls
    /// `<url>/port/rest/versions`, `passport` and `data`).
    pub url: String,
    /// The user key the service issued (sent as `userKey`).
    pub user_key: Secret,
    /// Seconds to wait for one answer.
    #[serde(default = "default_nsi_timeout")]
    pub timeout_secs: u64,
    /// Rows asked for per data page (1 to 500, the federal service's largest page).
    #[serde(default = "default_nsi_page_size")]
    pub page_size: u32,
    /// Attempts per request when the service fails (5xx, no answer); then the sync of the
    /// book fails, to be tried again on the next run.
    #[serde(default = "default_nsi_attempts")]
    pub attempts: u32,
    /// The books kept.
    #[serde(default = "default_nsi_books")]
    pub books: Vec<NsiBookSettings>,
}

/// One reference book the gateway keeps.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NsiBookSettings {
    /// The book's OID, e.g. `1.2.643.5.1.13.13.11.1522`.
    pub oid: String,
    /// A name for logs; absent: the passport's.
    #[serde(default)]
    pub name: Option<String>,
    /// The versions the document registry accepts (documents citing another are refused);
    /// absent: every kept version.
    #[serde(default)]
    pub registry_accepts: Option<Vec<String>>,
    /// The column holding the code; absent: the book's usual one (`MKB_CODE` for ICD-10),
    /// else the passport's primary key.
    #[serde(default)]
    pub code_column: Option<String>,
    /// The column holding the name; absent: the first of `NAME`, `MKB_NAME`, `NAME_FULL`
    /// the passport lists.
    #[serde(default)]
    pub display_column: Option<String>,
}

fn default_nsi_timeout() -> u64 {
    30
}

fn default_nsi_page_size() -> u32 {
    500
}

fn default_nsi_attempts() -> u32 {
    3
}

/// Specialties, document kinds, ICD-10 and the register of organizations.
fn default_nsi_books() -> Vec<NsiBookSettings> {
    use crate::model::nsi::{
        BOOK_DOCUMENT_KINDS, BOOK_ICD10, BOOK_ORGANIZATIONS, BOOK_SPECIALTIES,
    };
    [
        BOOK_SPECIALTIES,
        BOOK_DOCUMENT_KINDS,
        BOOK_ICD10,
        BOOK_ORGANIZATIONS,
    ]
    .into_iter()
    .map(|oid| NsiBookSettings {
        oid: oid.into(),
        name: None,
        registry_accepts: None,
        code_column: None,
        display_column: None,
    })
    .collect()
}

/// Citizens' appeals.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppealSettings {
    /// Days off that would otherwise be working days (`YYYY-MM-DD`), in `jobs.time_zone`.
    #[serde(default)]
    pub holidays: Vec<chrono::NaiveDate>,
    /// Saturdays and Sundays that are working days (a transferred day off).
    #[serde(default)]
    pub working_weekends: Vec<chrono::NaiveDate>,
    /// Working days to answer a complaint about a refusal to accept documents or to
    /// correct an error in a public service.
    #[serde(default = "default_refusal_days")]
    pub refusal_working_days: u32,
    /// Working days to answer any other complaint about a public service.
    #[serde(default = "default_complaint_days")]
    pub complaint_working_days: u32,
    /// Days to answer a general appeal.
    #[serde(default = "default_general_days")]
    pub general_days: u32,
    /// Days one extension of a general appeal adds (once, with a reason).
    #[serde(default = "default_general_days")]
    pub extension_days: u32,
    /// Minutes to a first answer to a district-chat message.
    #[serde(default = "default_chat_minutes")]
    pub chat_minutes: u32,
    /// Which organization answers appeals of a district (and topic) that name none.
    #[serde(default)]
    pub routes: Vec<AppealRouteSettings>,
    /// Where answers go back, by channel (`portal-complaint`, `district-chat`, `phone`,
    /// `in-person`): a webhook receiving JSON; an answer for a channel without one is a
    /// dead letter naming the missing setting.
    #[serde(default)]
    pub reply_urls: std::collections::BTreeMap<String, String>,
    /// Webhook of the ministry's operator, told of overdue appeals; without it the notices
    /// stay queued until one is configured.
    #[serde(default)]
    pub notify_url: Option<String>,
    /// Seconds to wait for a webhook.
    #[serde(default = "default_notify_timeout")]
    pub timeout_secs: u64,
    /// Delays between attempts to deliver an answer or a notice, in seconds; after the last
    /// it is a dead letter.
    #[serde(default = "default_booking_retries")]
    pub retry_schedule_secs: Vec<u64>,
}

/// The organization answering a district's appeals (of one topic, or of every topic).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppealRouteSettings {
    /// The district.
    pub district: String,
    /// The topic; absent: every topic not routed by a more specific entry.
    #[serde(default)]
    pub topic: Option<String>,
    /// The organization (FRMO OID).
    pub org: String,
}

fn default_refusal_days() -> u32 {
    5
}

fn default_complaint_days() -> u32 {
    15
}

fn default_general_days() -> u32 {
    30
}

fn default_chat_minutes() -> u32 {
    120
}

impl Default for AppealSettings {
    fn default() -> Self {
        AppealSettings {
            holidays: Vec::new(),
            working_weekends: Vec::new(),
            refusal_working_days: default_refusal_days(),
            complaint_working_days: default_complaint_days(),
            general_days: default_general_days(),
            extension_days: default_general_days(),
            chat_minutes: default_chat_minutes(),
            routes: Vec::new(),
            reply_urls: Default::default(),
            notify_url: None,
            timeout_secs: default_notify_timeout(),
            retry_schedule_secs: default_booking_retries(),
        }
    }
}

/// Retention of what the exchange leaves behind. Transaction records themselves are kept as
/// their route's policy says (`transaction_log`); the rest is here.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Days the stored bodies of transaction records are kept (the records stay longer).
    #[serde(default = "default_bodies_days")]
    pub transaction_bodies_days: u32,
    /// Days a delivered outbox item is kept.
    #[serde(default = "default_bodies_days")]
    pub outbox_delivered_days: u32,
    /// Days the history of a document in a final state (registered, rejected, dead-lettered)
    /// is kept; the document itself stays.
    #[serde(default = "default_history_days")]
    pub document_history_days: u32,
    /// Days a finished run of a job (or a worker's window) is kept in the jobs' history.
    #[serde(default = "default_job_runs_days")]
    pub job_runs_days: u32,
    /// Rows one statement removes at most: a pass is many short statements, never one long
    /// one holding locks.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: u32,
}

fn default_bodies_days() -> u32 {
    7
}

fn default_history_days() -> u32 {
    365
}

fn default_job_runs_days() -> u32 {
    90
}

fn default_batch_rows() -> u32 {
    5000
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            transaction_bodies_days: default_bodies_days(),
            outbox_delivered_days: default_bodies_days(),
            document_history_days: default_history_days(),
            job_runs_days: default_job_runs_days(),
            batch_rows: default_batch_rows(),
        }
    }
}

/// Scheduled jobs. A job with a cron expression (its own default or one given here) runs on
/// its ticks, each tick once across every replica sharing the database; the others loop.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobsSettings {
    /// Time zone of the cron expressions (IANA name).
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Cron expressions by job name, six fields with seconds first
    /// (`sec min hour day-of-month month day-of-week`), e.g. `"0 30 3 * * *"`.
    #[serde(default)]
    pub schedules: std::collections::BTreeMap<String, String>,
    /// Jobs that do not run (by name); they may still be run by hand.
    #[serde(default)]
    pub disabled: Vec<String>,
    /// How long a replica holds a run it claimed; a run still marked running after that
    /// died with its replica and is marked failed.
    #[serde(default = "default_job_lease")]
    pub lease_secs: u64,
    /// False for a process that runs jobs only when asked (`medgate job run`): nothing runs
    /// on its ticks or in loops.
    #[serde(default = "default_true")]
    pub run_scheduled: bool,
    /// Days ahead the schedule reconciliation compares with the clinic systems.
    #[serde(default = "default_reconcile_days")]
    pub reconcile_days: u32,
    /// Seconds of a worker's loop (outbox delivery, hold sweeper, schedule rounds) each row
    /// of its history sums up; a window that handled and failed nothing leaves no row.
    #[serde(default = "default_worker_window")]
    pub worker_window_secs: u64,
}

fn default_worker_window() -> u64 {
    60
}

fn default_reconcile_days() -> u32 {
    30
}

fn default_time_zone() -> String {
    "Europe/Moscow".into()
}

fn default_job_lease() -> u64 {
    900
}

impl JobsSettings {
    /// The region's time zone (`time_zone`, checked when the settings are loaded).
    pub fn tz(&self) -> chrono_tz::Tz {
        self.time_zone.parse().unwrap_or(chrono_tz::Europe::Moscow)
    }
}

impl Default for JobsSettings {
    fn default() -> Self {
        JobsSettings {
            time_zone: default_time_zone(),
            schedules: Default::default(),
            disabled: Vec::new(),
            lease_secs: default_job_lease(),
            run_scheduled: true,
            reconcile_days: default_reconcile_days(),
            worker_window_secs: default_worker_window(),
        }
    }
}

/// The federation of regional gateways, as this gateway takes part in it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FederationSettings {
    /// The region this gateway serves (subject code, e.g. `77`); organizations whose FRMO
    /// OID names another region belong to the peer serving it.
    pub region: String,
    /// Seconds to wait for a peer's answer.
    #[serde(default = "default_peer_timeout")]
    pub timeout_secs: u64,
    /// Delays between attempts to deliver a referral or its change to a peer, in seconds;
    /// after the last the item is dead-lettered.
    #[serde(default = "default_peer_retries")]
    pub retry_schedule_secs: Vec<u64>,
    /// The peer gateways.
    #[serde(default)]
    pub peers: Vec<PeerSettings>,
    /// A listener of its own for peer gateways, mutual TLS only (clients keep `http`);
    /// absent: peers come to `http` like everyone else (which must then speak TLS).
    #[serde(default)]
    pub listen: Option<FederationListenSettings>,
}

/// The listener peer gateways connect to.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FederationListenSettings {
    /// Address to bind, `HOST:PORT`.
    pub bind: String,
    /// Its TLS: a client certificate chaining to `client_ca` is required.
    pub tls: TlsSettings,
}

/// One peer gateway: where it is, how we prove who we are to it, and how it proves who it
/// is to us.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSettings {
    /// Its name: the client id its requests are recorded under, the partner name of calls
    /// to it.
    pub name: String,
    /// The regions reached through it (its own, and those it forwards to); it may act only
    /// for organizations of these regions.
    pub regions: Vec<String>,
    /// Its base URL (`https://host:port`); the FHIR API is under `/fhir`.
    pub base_url: String,
    /// PEM file of the certificate this gateway presents to it.
    #[serde(default)]
    pub client_certificate: Option<String>,
    /// PEM file (PKCS#8) of that certificate's private key.
    #[serde(default)]
    pub client_key: Option<String>,
    /// PEM file of the CA its server certificate must chain to (instead of the system's).
    #[serde(default)]
    pub ca: Option<String>,
    /// The TLS client certificate its requests to us come with.
    pub certificate: ClientCertificate,
}

fn default_peer_timeout() -> u64 {
    10
}

fn default_peer_retries() -> Vec<u64> {
    vec![1, 5, 30, 120, 600, 1800, 3600]
}

/// Referrals between organizations.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReferralSettings {
    /// Days a referral stays valid unless it says otherwise.
    #[serde(default = "default_referral_validity")]
    pub validity_days: u32,
    /// Webhook told of every referral move (JSON with the organization to tell); without
    /// it notices stay queued until one is configured.
    #[serde(default)]
    pub notify_url: Option<String>,
    /// Seconds to wait for the webhook.
    #[serde(default = "default_notify_timeout")]
    pub notify_timeout_secs: u64,
    /// Delays between attempts to deliver a notice, in seconds; after the last the notice
    /// is dead-lettered.
    #[serde(default = "default_booking_retries")]
    pub notify_retry_schedule_secs: Vec<u64>,
    /// Hours a target takes to answer a referral before it is escalated to the region's
    /// operator (a rule may say otherwise).
    #[serde(default = "default_answer_hours")]
    pub answer_within_hours: u32,
    /// Days before an accepted referral that is not booked lapses when the referring
    /// organization is reminded (once); 0: no reminders.
    #[serde(default = "default_remind_days")]
    pub remind_days_before: u32,
    /// What each target organization accepts.
    #[serde(default)]
    pub rules: Vec<AcceptanceRuleSettings>,
}

fn default_answer_hours() -> u32 {
    72
}

fn default_remind_days() -> u32 {
    3
}

fn default_referral_validity() -> u32 {
    30
}

impl Default for ReferralSettings {
    fn default() -> Self {
        ReferralSettings {
            validity_days: default_referral_validity(),
            notify_url: None,
            notify_timeout_secs: default_notify_timeout(),
            notify_retry_schedule_secs: default_booking_retries(),
            answer_within_hours: default_answer_hours(),
            remind_days_before: default_remind_days(),
            rules: Vec::new(),
        }
    }
}

/// One acceptance rule of a target organization.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptanceRuleSettings {
    /// The target organization (FRMO OID).
    pub org: String,
    /// The rule's name, quoted in refusals.
    pub name: String,
    /// Referral kinds (consultation, diagnostic, hospitalization, teleconsultation);
    /// empty: all.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// ICD-10 ranges such as `I00-I99`; empty: every diagnosis.
    #[serde(default)]
    pub diagnoses: Vec<String>,
    /// Profiles (specialty codes); empty: all.
    #[serde(default)]
    pub profiles: Vec<String>,
    /// Documents required with the referral.
    #[serde(default)]
    pub required_documents: Vec<RequiredDocumentSettings>,
    /// Hours this target takes to answer; absent: `referrals.answer_within_hours`.
    #[serde(default)]
    pub answer_within_hours: Option<u32>,
}

/// A document a rule requires.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RequiredDocumentSettings {
    /// Document kind code (reference book 1.2.643.5.1.13.13.11.1522).
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Asked for "when available" only.
    #[serde(default)]
    pub when_available: bool,
}

impl ReferralSettings {
    /// The rules as the domain reads them; the error names the setting at fault.
    pub fn acceptance_rules(
        &self,
    ) -> Result<Vec<crate::model::referral::AcceptanceRule>, (String, String)> {
        use crate::model::referral::{AcceptanceRule, IcdRange, ReferralKind, RequiredDocument};
        self.rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let at = |key: &str| format!("referrals.rules[{i}].{key}");
                let org = crate::model::Oid::parse_organization(&r.org)
                    .map_err(|e| (at("org"), e.to_string()))?;
                let kinds = r
                    .kinds
                    .iter()
                    .enumerate()
                    .map(|(j, k)| {
                        ReferralKind::parse(k).ok_or_else(|| {
                            (
                                at(&format!("kinds[{j}]")),
                                "expected consultation, diagnostic, hospitalization or \
                                 teleconsultation"
                                    .to_string(),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?;
                let diagnoses = r
                    .diagnoses
                    .iter()
                    .enumerate()
                    .map(|(j, d)| {
                        IcdRange::parse(d).map_err(|e| (at(&format!("diagnoses[{j}]")), e))
                    })
                    .collect::<Result<_, _>>()?;
                if r.answer_within_hours == Some(0) {
                    return Err((at("answer_within_hours"), "must be at least 1".into()));
                }
                Ok(AcceptanceRule {
                    org,
                    answer_within_hours: r.answer_within_hours,
                    name: r.name.clone(),
                    kinds,
                    diagnoses,
                    profiles: r.profiles.clone(),
                    required_documents: r
                        .required_documents
                        .iter()
                        .map(|d| RequiredDocument {
                            kind: d.kind.clone(),
                            name: d.name.clone(),
                            when_available: d.when_available,
                        })
                        .collect(),
                })
            })
            .collect()
    }
}

/// Booking rules.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BookingSettings {
    /// How long a hold keeps a slot for its client, in seconds.
    #[serde(default = "default_hold_secs")]
    pub hold_secs: u64,
    /// How long a booking's hold waits for the clinic system's answer, in seconds; longer
    /// than the clinic systems' `timeout_secs`. A booking cut off by a crash frees its slot
    /// (with a cancel sent to the clinic system) after this.
    #[serde(default = "default_booking_grace")]
    pub booking_grace_secs: u64,
    /// Where patient notifications (slot withdrawn, ...) are POSTed as JSON; absent means
    /// they stay queued in the outbox until a URL is configured.
    #[serde(default)]
    pub notify_url: Option<String>,
    /// Seconds to wait for the notification endpoint.
    #[serde(default = "default_notify_timeout")]
    pub notify_timeout_secs: u64,
    /// Period of the incremental schedule sync and the withdrawn-slot check, in seconds;
    /// 0 turns the background sync off.
    #[serde(default = "default_sync_interval")]
    pub sync_interval_secs: u64,
    /// Delays between attempts to forward a cancellation to the clinic system, in seconds;
    /// after the last the item is dead-lettered.
    #[serde(default = "default_booking_retries")]
    pub mis_retry_schedule_secs: Vec<u64>,
    /// Delays between attempts to deliver a patient notification, in seconds; after the
    /// last the item is dead-lettered.
    #[serde(default = "default_booking_retries")]
    pub notify_retry_schedule_secs: Vec<u64>,
}

fn default_booking_retries() -> Vec<u64> {
    vec![1, 5, 15, 60, 300, 900, 3600, 21600]
}

fn default_hold_secs() -> u64 {
    300
}
fn default_booking_grace() -> u64 {
    120
}
fn default_notify_timeout() -> u64 {
    10
}
fn default_sync_interval() -> u64 {
    60
}

impl Default for BookingSettings {
    fn default() -> Self {
        BookingSettings {
            hold_secs: default_hold_secs(),
            booking_grace_secs: default_booking_grace(),
            notify_url: None,
            notify_timeout_secs: default_notify_timeout(),
            sync_interval_secs: default_sync_interval(),
            mis_retry_schedule_secs: default_booking_retries(),
            notify_retry_schedule_secs: default_booking_retries(),
        }
    }
}

/// A clinic system that owns schedules (`[emias]`: the city-wide MIS over SOAP;
/// `[fhir_mis]`: a clinic MIS over FHIR R4).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmiasSettings {
    /// Endpoint (SOAP URL, or FHIR base URL).
    pub url: String,
    /// Seconds to wait for an answer.
    #[serde(default = "default_emias_timeout")]
    pub timeout_secs: u64,
    /// Days of schedule to synchronize, from today.
    #[serde(default = "default_days_ahead")]
    pub days_ahead: u32,
}

fn default_emias_timeout() -> u64 {
    30
}
fn default_days_ahead() -> u32 {
    30
}

/// The registry of electronic medical documents and delivery to it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemdSettings {
    /// Registry endpoint (SOAP 1.2).
    pub url: String,
    /// Client system id sent in the transport header.
    pub client_entity_id: String,
    /// Public URL of this gateway's `/soap/remd/callback` (WS-Addressing ReplyTo).
    pub callback_url: String,
    /// Public URL of this gateway's `/soap/remd/provider` (where the registry fetches files).
    pub file_url: String,
    /// Seconds to wait for the registry's synchronous answer.
    #[serde(default = "default_remd_timeout")]
    pub timeout_secs: u64,
    /// Delays between attempts, in seconds; after the last the item is dead-lettered.
    #[serde(default = "default_retry_schedule")]
    pub retry_schedule_secs: Vec<u64>,
    /// Seconds after which a missing verdict is asked for with `getRegistryItem`.
    #[serde(default = "default_callback_timeout")]
    pub callback_timeout_secs: u64,
    /// Concurrent deliveries per gateway process.
    #[serde(default = "default_remd_workers")]
    pub workers: usize,
    /// Largest accepted document, in bytes.
    #[serde(default = "default_max_document")]
    pub max_document_bytes: usize,
    /// Run delivery workers in this process; `false` makes an intake-only node.
    #[serde(default = "default_true")]
    pub deliver: bool,
    /// Owner (organization OID) of the `[[signing.keys]]` entry with which every outbound
    /// registry message is signed (XMLDSig in WS-Security); unset sends unsigned messages.
    #[serde(default)]
    pub message_key: Option<String>,
    /// PEM files of the certificates the registry signs its callbacks with; when any is
    /// given, an unsigned or badly signed callback is refused with a Fault saying why.
    #[serde(default)]
    pub callback_certificates: Vec<String>,
}

fn default_true() -> bool {
    true
}

fn default_remd_timeout() -> u64 {
    10
}
fn default_retry_schedule() -> Vec<u64> {
    vec![10, 60, 300, 1800, 7200, 43200]
}
fn default_callback_timeout() -> u64 {
    600
}
fn default_remd_workers() -> usize {
    8
}
fn default_max_document() -> usize {
    5 * 1024 * 1024
}

/// Signing keys held by the gateway.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SigningSettings {
    /// One entry per key.
    #[serde(default)]
    pub keys: Vec<KeySettings>,
}

/// Whose signature a key makes.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum KeyRole {
    /// The organization's signature (owner is its OID).
    Organization,
    /// A doctor's personal signature (owner is the doctor's SNILS).
    Doctor,
}

/// A key and certificate from PEM files or a PKCS#12 file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    /// Organization OID or doctor SNILS.
    pub owner: String,
    /// Organization or doctor.
    pub role: KeyRole,
    /// PEM certificate (with `private_key`).
    pub certificate: Option<String>,
    /// PEM private key (with `certificate`).
    pub private_key: Option<String>,
    /// PKCS#12 file holding key and certificate (instead of the two PEM files).
    pub pkcs12: Option<String>,
    /// Passphrase of the private key or PKCS#12 file.
    pub passphrase: Option<Secret>,
    /// A key held by an external signing service instead of files.
    pub remote: Option<RemoteKeySettings>,
}

/// A key that lives in an external signing service (certified token, HSM).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteKeySettings {
    /// Base URL of the signing service.
    pub url: String,
    /// The key's id in the service.
    pub key_id: String,
    /// Bearer token for the service.
    pub token: Secret,
    /// Seconds to wait for a signature.
    #[serde(default = "default_remote_timeout")]
    pub timeout_secs: u64,
}

fn default_remote_timeout() -> u64 {
    5
}

impl ClientCertificate {
    /// The fingerprint as 32 bytes, when one is given.
    pub fn fingerprint(&self) -> Option<[u8; 32]> {
        let hex_digits: String = self
            .sha256
            .as_deref()?
            .chars()
            .filter(|c| *c != ':')
            .collect();
        <[u8; 32]>::try_from(hex::decode(hex_digits).ok()?.as_slice()).ok()
    }

    /// Exactly one of a well-formed fingerprint or a non-empty subject.
    fn check(&self) -> Result<(), &'static str> {
        match (&self.sha256, &self.subject) {
            (Some(_), None) if self.fingerprint().is_some() => Ok(()),
            (Some(_), None) => Err("sha256: expected 64 hex characters (colons allowed)"),
            (None, Some(s)) if !s.trim().is_empty() => Ok(()),
            (None, Some(_)) => Err("subject must not be empty"),
            _ => Err("give exactly one of sha256 or subject"),
        }
    }
}

/// HTTP listener settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Address and port to listen on, e.g. `0.0.0.0:8080`.
    pub bind: String,
    /// Largest accepted request body in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Seconds a request body may take to arrive in full; a slower one gets 408.
    pub body_timeout_secs: u64,
    /// Requests of protected routes at work at once; beyond, a request waits
    /// `queue_timeout_ms` and is then answered 503 with Retry-After.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: usize,
    /// How long a request waits for admission before it is shed, in milliseconds.
    #[serde(default = "default_queue_timeout")]
    pub queue_timeout_ms: u64,
    /// Seconds a client has to send a request's head (line and headers); slower: 408.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_secs: u64,
    /// Seconds an idle keep-alive connection stays open. Longer than clients' pool idle
    /// time, so a client never sends on a connection the gateway is closing.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u64,
    /// Number of HTTP worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// Public base URL used in links the gateway emits (FHIR `next` links, WSDL address).
    pub public_url: Option<String>,
    /// TLS (and client certificates); none: plain HTTP, for a TLS-terminating proxy.
    #[serde(default)]
    pub tls: Option<TlsSettings>,
}

/// The listener's TLS: its certificate and key, and the CA client certificates must chain
/// to. The files are read again on `SIGHUP` and when they change (`watch_secs`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file of the server certificate, followed by its chain.
    pub certificate: String,
    /// PEM file of the server's private key.
    pub private_key: String,
    /// PEM file of the CA certificates client certificates must chain to; none: no client
    /// certificate is asked for.
    #[serde(default)]
    pub client_ca: Option<String>,
    /// Refuse connections without a client certificate (else bearer tokens still work).
    #[serde(default)]
    pub require_client_certificate: bool,
    /// Seconds between checks of the files for changes; 0: reload only on `SIGHUP`.
    #[serde(default = "default_tls_watch")]
    pub watch_secs: u64,
}

fn default_max_inflight() -> usize {
    256
}

fn default_queue_timeout() -> u64 {
    2000
}

fn default_header_timeout() -> u64 {
    10
}

fn default_keep_alive() -> u64 {
    75
}

fn default_tls_watch() -> u64 {
    10
}

/// Database settings.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://user@host:port/db` or `sqlite://path/to/file.db`.
    pub url: String,
    /// Password for PostgreSQL, kept apart from the URL so that it is never logged.
    pub password: Option<Secret>,
    /// Largest number of pooled connections.
    pub max_connections: u32,
    /// Seconds to wait for a free connection before failing a request.
    pub acquire_timeout_secs: u64,
    /// A pooled connection idle for longer than this (seconds) is pinged before use, so one
    /// the server dropped during a quiet spell is replaced unnoticed.
    pub ping_idle_secs: u64,
    /// Apply pending migrations when the gateway starts.
    pub migrate_on_start: bool,
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(&self.url))
            .field("password", &self.password)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout_secs", &self.acquire_timeout_secs)
            .field("ping_idle_secs", &self.ping_idle_secs)
            .field("migrate_on_start", &self.migrate_on_start)
            .finish()
    }
}

/// Hides a password embedded in a connection URL.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("redacted"));
            u.to_string()
        }
        _ => raw.to_string(),
    }
}

/// Log output settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `pretty` for terminals, `json` for log collectors, `auto` picks by whether stderr is a terminal.
    pub format: LogFormat,
    /// Filter in `tracing` syntax, e.g. `info,medgate=debug`.
    pub filter: String,
    /// Base URL of an OpenTelemetry collector's OTLP/HTTP receiver (e.g.
    /// `http://otel-collector:4318`): the spans of every request served and call made are
    /// exported to its `/v1/traces`, as service `instance`. Absent: no export.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, coloured when on a terminal.
    Pretty,
    /// One JSON object per line.
    Json,
    /// Pretty on a terminal, JSON otherwise.
    Auto,
}

/// What the transaction log keeps of message bodies.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BodyPolicy {
    /// Request and response bodies are stored.
    Full,
    /// Only metadata (sizes, status, timings) is stored.
    MetadataOnly,
    /// Nothing is recorded for this route.
    None,
}

/// Transaction log settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TransactionLogSettings {
    /// Body policy for routes that no rule below matches.
    pub default_bodies: BodyPolicy,
    /// Days a record is kept for routes that no rule below matches.
    pub default_retention_days: u32,
    /// Largest body stored per message; longer bodies are cut and marked truncated.
    pub max_stored_body_bytes: usize,
    /// Per-route rules; the longest matching path prefix wins.
    #[serde(default)]
    pub routes: Vec<RoutePolicy>,
}

/// Storage rule for requests whose path starts with `prefix`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoutePolicy {
    /// Path prefix, e.g. `/fhir/Appointment`.
    pub prefix: String,
    /// What to keep of bodies.
    pub bodies: BodyPolicy,
    /// Days to keep records; falls back to the default.
    pub retention_days: Option<u32>,
}

/// One API client and what it may do.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// Stable client identifier recorded in logs and audit.
    pub id: String,
    /// Human-readable name.
    #[serde(default)]
    pub name: String,
    /// SHA-256 of the bearer token, hex encoded (`printf %s TOKEN | sha256sum`); empty for
    /// a client known only by its certificate.
    #[serde(default)]
    pub token_sha256: Secret,
    /// Organization OIDs this client may act for; empty means none.
    #[serde(default)]
    pub organizations: Vec<String>,
    /// Granted scopes, e.g. `schedule:read`, `appointment:write`, `admin`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Booking channels this client may book through (`registry`, `phone`, `kiosk`,
    /// `internet`, `doctor`, `referral`); the first is used when a request names none.
    /// Empty means every channel, with `internet` as the default.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Requests per second this client may make (answered 429 beyond); none: unlimited.
    #[serde(default)]
    pub rate: Option<RateLimit>,
    /// PEM file of the certificate this client signs its SOAP requests with (WS-Security);
    /// when set, its unsigned or badly signed SOAP requests are refused with a Fault.
    #[serde(default)]
    pub signing_certificate: Option<String>,
    /// The TLS client certificate that identifies this client instead of a token.
    #[serde(default)]
    pub certificate: Option<ClientCertificate>,
}

/// How a client's TLS certificate is recognised: exactly one of its SHA-256 fingerprint or
/// its subject. The certificate must chain to `http.tls.client_ca` either way.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientCertificate {
    /// SHA-256 of the certificate's DER, hex (colons allowed), as `openssl x509 -noout
    /// -fingerprint -sha256` prints it.
    #[serde(default)]
    pub sha256: Option<String>,
    /// The subject as `openssl x509 -noout -subject -nameopt RFC2253` prints it, e.g.
    /// `CN=mis.clinic-1,O=City Polyclinic 1,C=RU`.
    #[serde(default)]
    pub subject: Option<String>,
}

/// A client's request rate.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second (at least 1).
    pub per_second: u32,
    /// Requests that may come at once before the rate applies (at least 1).
    pub burst: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            instance: "medgate".into(),
            http: HttpSettings {
                bind: "127.0.0.1:8080".into(),
                max_body_bytes: 10 * 1024 * 1024,
                body_timeout_secs: 60,
                max_inflight: default_max_inflight(),
                queue_timeout_ms: default_queue_timeout(),
                header_timeout_secs: default_header_timeout(),
                keep_alive_secs: default_keep_alive(),
                workers: 0,
                public_url: None,
                tls: None,
            },
            database: DatabaseSettings {
                url: "sqlite://medgate.db".into(),
                password: None,
                max_connections: 16,
                acquire_timeout_secs: 5,
                ping_idle_secs: 1,
                migrate_on_start: true,
            },
            log: LogSettings {
                format: LogFormat::Auto,
                filter: "info".into(),
                otlp_endpoint: None,
            },
            transaction_log: TransactionLogSettings {
                default_bodies: BodyPolicy::MetadataOnly,
                default_retention_days: 30,
                max_stored_body_bytes: 256 * 1024,
                routes: Vec::new(),
            },
            clients: Vec::new(),
            remd: None,
            signing: SigningSettings::default(),
            emias: None,
            fhir_mis: None,
            booking: BookingSettings::default(),
            referrals: ReferralSettings::default(),
            federation: None,
            jobs: JobsSettings::default(),
            retention: RetentionSettings::default(),
            appeals: AppealSettings::default(),
            dashboard: DashboardSettings::default(),
            nsi: None,
        }
    }
}

/// A settings file or environment variable that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file does not exist.
    #[error("configuration file {0} not found")]
    NotFound(String),
    /// A key is missing, unknown or has the wrong type; the message names it.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Loads defaults, then the TOML file (if given), then `MEDGATE_*` variables, and validates.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::NotFound(path.display().to_string()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed("MEDGATE_").split("__"));
        Self::from_figment(figment)
    }

    /// Extracts and validates settings from an assembled figment.
    pub fn from_figment(figment: Figment) -> Result<Settings, ConfigError> {
        let settings: Settings = figment.extract().map_err(|e| {
            let mut out = Vec::new();
            for err in e {
                out.push(describe_figment_error(&err));
            }
            ConfigError::Invalid(out.join("; "))
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks rules that types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::Invalid(format!("key `{key}`: {why}")));
        if self.http.bind.parse::<std::net::SocketAddr>().is_err() {
            return bad("http.bind", "expected HOST:PORT with a numeric IP address");
        }
        if let Some(t) = &self.http.tls {
            if t.require_client_certificate && t.client_ca.is_none() {
                return bad(
                    "http.tls.require_client_certificate",
                    "needs http.tls.client_ca",
                );
            }
        }
        if self.jobs.time_zone.parse::<chrono_tz::Tz>().is_err() {
            return bad(
                "jobs.time_zone",
                "expected an IANA time zone, e.g. Europe/Moscow",
            );
        }
        for (job, cron) in &self.jobs.schedules {
            if cron.split_whitespace().count() != 6 {
                return bad(
                    &format!("jobs.schedules.{job}"),
                    "expected six fields: sec min hour day-of-month month day-of-week",
                );
            }
        }
        if self.jobs.lease_secs == 0 {
            return bad("jobs.lease_secs", "must be at least 1");
        }
        if let Some(f) = &self.federation {
            if crate::model::organization::Region::parse(&f.region).is_none() {
                return bad("federation.region", "expected a region code, 1 to 999");
            }
            if f.retry_schedule_secs.is_empty() || f.timeout_secs == 0 {
                return bad(
                    "federation",
                    "timeout_secs and retry_schedule_secs must not be empty or zero",
                );
            }
            if let Some(l) = &f.listen {
                if l.bind.parse::<std::net::SocketAddr>().is_err() {
                    return bad(
                        "federation.listen.bind",
                        "expected HOST:PORT with a numeric IP address",
                    );
                }
                if l.tls.client_ca.is_none() || !l.tls.require_client_certificate {
                    return bad(
                        "federation.listen.tls",
                        "peers are known by their certificates: set client_ca and require_client_certificate = true",
                    );
                }
            }
            for (i, p) in f.peers.iter().enumerate() {
                let key = |k: &str| format!("federation.peers[{i}].{k}");
                if p.name.trim().is_empty() || self.clients.iter().any(|c| c.id == p.name) {
                    return bad(&key("name"), "must be set and differ from every client id");
                }
                if p.regions.is_empty()
                    || p.regions
                        .iter()
                        .any(|r| crate::model::organization::Region::parse(r).is_none())
                {
                    return bad(&key("regions"), "expected one or more region codes");
                }
                if !p.base_url.starts_with("https://") && !p.base_url.starts_with("http://") {
                    return bad(&key("base_url"), "expected an http(s) URL");
                }
                if p.client_certificate.is_some() != p.client_key.is_some() {
                    return bad(
                        &key("client_certificate"),
                        "client_certificate and client_key come together",
                    );
                }
                if p.certificate.sha256.is_none() && p.certificate.subject.is_none() {
                    return bad(&key("certificate"), "give its sha256 or subject");
                }
            }
        }
        if self.http.max_body_bytes < 1024 {
            return bad("http.max_body_bytes", "must be at least 1024");
        }
        if self.http.header_timeout_secs == 0 {
            return bad("http.header_timeout_secs", "must be at least 1");
        }
        if self.http.max_inflight == 0 {
            return bad("http.max_inflight", "must be at least 1");
        }
        if self.http.body_timeout_secs == 0 {
            return bad("http.body_timeout_secs", "must be at least 1");
        }
        let url = &self.database.url;
        if !(url.starts_with("postgres://")
            || url.starts_with("postgresql://")
            || url.starts_with("sqlite:"))
        {
            return bad(
                "database.url",
                "must start with postgres://, postgresql:// or sqlite:",
            );
        }
        if self.database.max_connections == 0 {
            return bad("database.max_connections", "must be at least 1");
        }
        let mut seen = std::collections::HashSet::new();
        for (i, c) in self.clients.iter().enumerate() {
            if let Some(r) = c.rate {
                if r.per_second == 0 || r.burst == 0 {
                    return bad(
                        &format!("clients[{i}].rate"),
                        "per_second and burst must be at least 1",
                    );
                }
            }
            if c.id.trim().is_empty() {
                return bad(&format!("clients[{i}].id"), "must not be empty");
            }
            if !seen.insert(c.id.clone()) {
                return bad(&format!("clients[{i}].id"), "duplicate client id");
            }
            let hash = c.token_sha256.expose();
            match &c.certificate {
                None if hash.is_empty() => {
                    return bad(
                        &format!("clients[{i}]"),
                        "needs token_sha256 or certificate (or both)",
                    )
                }
                Some(cert) => {
                    if let Err(why) = cert.check() {
                        return bad(&format!("clients[{i}].certificate"), why);
                    }
                    if self
                        .http
                        .tls
                        .as_ref()
                        .and_then(|t| t.client_ca.as_ref())
                        .is_none()
                    {
                        return bad(
                            &format!("clients[{i}].certificate"),
                            "needs http.tls.client_ca: client certificates are asked for only then",
                        );
                    }
                }
                None => {}
            }
            if !hash.is_empty()
                && (hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return bad(
                    &format!("clients[{i}].token_sha256"),
                    "expected 64 hex characters (SHA-256 of the token)",
                );
            }
            for (j, ch) in c.channels.iter().enumerate() {
                if crate::model::schedule::Channel::parse(ch).is_none() {
                    return bad(
                        &format!("clients[{i}].channels[{j}]"),
                        "must be one of registry, phone, kiosk, internet, doctor, referral",
                    );
                }
            }
            for (j, oid) in c.organizations.iter().enumerate() {
                if let Err(e) = crate::model::Oid::parse(oid) {
                    return bad(&format!("clients[{i}].organizations[{j}]"), &e.to_string());
                }
            }
        }
        if let Some(r) = &self.remd {
            for (key, value) in [
                ("remd.url", &r.url),
                ("remd.callback_url", &r.callback_url),
                ("remd.file_url", &r.file_url),
            ] {
                if url::Url::parse(value).is_err() {
                    return bad(key, "must be an absolute URL");
                }
            }
            if r.retry_schedule_secs.is_empty() {
                return bad("remd.retry_schedule_secs", "needs at least one delay");
            }
            if r.workers == 0 {
                return bad("remd.workers", "must be at least 1");
            }
        }
        for (name, mis) in [("emias", &self.emias), ("fhir_mis", &self.fhir_mis)] {
            let Some(e) = mis else { continue };
            if !matches!(
                url::Url::parse(&e.url)
                    .map(|u| u.scheme().to_string())
                    .as_deref(),
                Ok("http" | "https")
            ) {
                return bad(&format!("{name}.url"), "must be an absolute http(s) URL");
            }
            if e.days_ahead == 0 {
                return bad(&format!("{name}.days_ahead"), "must be at least 1");
            }
            if e.timeout_secs == 0 {
                return bad(&format!("{name}.timeout_secs"), "must be at least 1");
            }
        }
        let b = &self.booking;
        if b.hold_secs == 0 {
            return bad("booking.hold_secs", "must be at least 1");
        }
        let slowest = [&self.emias, &self.fhir_mis]
            .into_iter()
            .flatten()
            .map(|e| e.timeout_secs)
            .max()
            .unwrap_or(0);
        if b.booking_grace_secs <= slowest {
            return bad(
                "booking.booking_grace_secs",
                "must be longer than the clinic systems' timeout_secs",
            );
        }
        for (key, schedule) in [
            (
                "booking.mis_retry_schedule_secs",
                &b.mis_retry_schedule_secs,
            ),
            (
                "booking.notify_retry_schedule_secs",
                &b.notify_retry_schedule_secs,
            ),
        ] {
            if schedule.is_empty() {
                return bad(key, "needs at least one delay");
            }
        }
        for (key, url) in [
            ("booking.notify_url", &b.notify_url),
            ("referrals.notify_url", &self.referrals.notify_url),
        ] {
            if let Some(u) = url {
                if !matches!(
                    url::Url::parse(u)
                        .map(|u| u.scheme().to_string())
                        .as_deref(),
                    Ok("http" | "https")
                ) {
                    return bad(key, "must be an absolute http(s) URL");
                }
            }
        }
        let r = &self.referrals;
        if !(1..=365).contains(&r.validity_days) {
            return bad("referrals.validity_days", "must be 1 to 365");
        }
        if r.answer_within_hours == 0 {
            return bad("referrals.answer_within_hours", "must be at least 1");
        }
        if r.notify_retry_schedule_secs.is_empty() {
            return bad(
                "referrals.notify_retry_schedule_secs",
                "needs at least one delay",
            );
        }
        if let Err((key, message)) = r.acceptance_rules() {
            return bad(&key, &message);
        }
        for (i, k) in self.signing.keys.iter().enumerate() {
            let pem = k.certificate.is_some() && k.private_key.is_some();
            let sources = [pem, k.pkcs12.is_some(), k.remote.is_some()];
            if sources.iter().filter(|x| **x).count() != 1 {
                return bad(
                    &format!("signing.keys[{i}]"),
                    "give exactly one of: certificate + private_key (PEM), pkcs12, remote",
                );
            }
            if let Some(r) = &k.remote {
                if url::Url::parse(&r.url).is_err() {
                    return bad(
                        &format!("signing.keys[{i}].remote.url"),
                        "must be an absolute URL",
                    );
                }
            }
            let owner_ok = match k.role {
                KeyRole::Organization => crate::model::Oid::parse_organization(&k.owner).is_ok(),
                KeyRole::Doctor => crate::model::Snils::parse(&k.owner).is_ok(),
            };
            if !owner_ok {
                return bad(
                    &format!("signing.keys[{i}].owner"),
                    "must be an organization OID (role organization) or a SNILS (role doctor)",
                );
            }
        }
        if let Some(n) = &self.nsi {
            if let Err((key, why)) = n.check() {
                return bad(&key, &why);
            }
        }
        for (i, r) in self.transaction_log.routes.iter().enumerate() {
            if !r.prefix.starts_with('/') {
                return bad(
                    &format!("transaction_log.routes[{i}].prefix"),
                    "must start with /",
                );
            }
        }
        Ok(())
    }
}

impl NsiSettings {
    /// Rules types alone cannot express; the error names the key at fault.
    fn check(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, why: &str| Err((format!("nsi.{key}"), why.to_string()));
        if !matches!(
            url::Url::parse(&self.url)
                .map(|u| u.scheme().to_string())
                .as_deref(),
            Ok("http" | "https")
        ) {
            return bad("url", "must be an absolute http(s) URL");
        }
        if self.user_key.expose().trim().is_empty() {
            return bad("user_key", "must not be empty");
        }
        if self.timeout_secs == 0 {
            return bad("timeout_secs", "must be at least 1");
        }
        if !(1..=500).contains(&self.page_size) {
            return bad("page_size", "must be 1 to 500");
        }
        if !(1..=10).contains(&self.attempts) {
            return bad("attempts", "must be 1 to 10");
        }
        if self.books.is_empty() {
            return bad("books", "name at least one book, or leave [nsi] out");
        }
        let mut seen = std::collections::HashSet::new();
        for (i, b) in self.books.iter().enumerate() {
            if let Err(e) = crate::model::Oid::parse(&b.oid) {
                return bad(&format!("books[{i}].oid"), &e.to_string());
            }
            if !seen.insert(b.oid.as_str()) {
                return bad(&format!("books[{i}].oid"), "the book is named twice");
            }
            if let Some(accepts) = &b.registry_accepts {
                if accepts.is_empty() || accepts.iter().any(|v| v.trim().is_empty()) {
                    return bad(
                        &format!("books[{i}].registry_accepts"),
                        "give the versions (non-empty), or leave it out to accept every kept version",
                    );
                }
            }
        }
        Ok(())
    }
}

fn describe_figment_error(err: &figment::Error) -> String {
    let key = if err.path.is_empty() {
        None
    } else {
        Some(err.path.join("."))
    };
    let source = err
        .metadata
        .as_ref()
        .map(|m| m.name.to_string())
        .unwrap_or_default();
    match key {
        Some(k) => format!("key `{k}`: {} ({source})", err.kind),
        None => format!("{} ({source})", err.kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_redacted_in_debug() {
        let mut s = Settings::default();
        s.database.password = Some(Secret::new("hunter2"));
        s.database.url = "postgres://gw:pw@db/medgate".into();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(!dbg.contains(":pw@"), "{dbg}");
        assert!(dbg.contains("[redacted]"));
    }

    #[test]
    fn bad_type_names_the_key() {
        let fig = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::string("[http]\nmax_body_bytes = \"lots\"\n"));
        let err = Settings::from_figment(fig).unwrap_err().to_string();
        assert!(err.contains("http.max_body_bytes"), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let fig = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::string("[database]\nulr = \"x\"\n"));
        let err = Settings::from_figment(fig).unwrap_err().to_string();
        assert!(err.contains("ulr"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let fig = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::string("[http]\nbind = \"nowhere\"\n"));
        let err = Settings::from_figment(fig).unwrap_err().to_string();
        assert!(err.contains("http.bind"), "{err}");
    }

    #[test]
    fn client_certificates_are_checked() {
        let tls = "[http.tls]\ncertificate = \"s.pem\"\nprivate_key = \"s.key\"\n";
        let ca = "client_ca = \"ca.pem\"\n";
        for (toml, key) in [
            ("[[clients]]\nid = \"bare\"\n".to_string(), "clients[0]`: needs token_sha256 or certificate"),
            (
                format!("{tls}{ca}[[clients]]\nid = \"c\"\ncertificate = {{ sha256 = \"AB:CD\" }}\n"),
                "clients[0].certificate`: sha256",
            ),
            (
                format!("{tls}{ca}[[clients]]\nid = \"c\"\ncertificate = {{ sha256 = \"{}\", subject = \"CN=x\" }}\n", "0".repeat(64)),
                "exactly one",
            ),
            (
                format!("{tls}[[clients]]\nid = \"c\"\ncertificate = {{ subject = \"CN=x\" }}\n"),
                "needs http.tls.client_ca",
            ),
            (format!("{tls}require_client_certificate = true\n"), "http.tls.require_client_certificate"),
        ] {
            let fig = Figment::from(Serialized::defaults(Settings::default())).merge(Toml::string(&toml));
            let err = Settings::from_figment(fig).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        let fig =
            Figment::from(Serialized::defaults(Settings::default())).merge(Toml::string(&format!(
                "{tls}{ca}[[clients]]\nid = \"c\"\ncertificate = {{ sha256 = \"{}\" }}\n",
                ["AB"; 32].join(":")
            )));
        let s = Settings::from_figment(fig).unwrap();
        let fp = s.clients[0].certificate.as_ref().unwrap().fingerprint();
        assert_eq!(fp, Some([0xAB; 32]));
    }

    #[test]
    fn schedule_and_booking_settings_are_checked() {
        for (toml, key) in [
            ("[emias]\nurl = \"emias.local/soap\"\n", "emias.url"),
            ("[emias]\nurl = \"http://emias.local/soap\"\ndays_ahead = 0\n", "emias.days_ahead"),
            ("[booking]\nhold_secs = 0\n", "booking.hold_secs"),
            (
                "[emias]\nurl = \"http://emias.local/soap\"\ntimeout_secs = 30\n[booking]\nbooking_grace_secs = 30\n",
                "booking.booking_grace_secs",
            ),
            ("[booking]\nmis_retry_schedule_secs = []\n", "booking.mis_retry_schedule_secs"),
            ("[booking]\nnotify_url = \"ftp://portal/notify\"\n", "booking.notify_url"),
            (
                "[[clients]]\nid = \"kiosk\"\ntoken_sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nchannels = [\"teleport\"]\n",
                "clients[0].channels[0]",
            ),
        ] {
            let fig = Figment::from(Serialized::defaults(Settings::default())).merge(Toml::string(toml));
            let err = Settings::from_figment(fig).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        let fig = Figment::from(Serialized::defaults(Settings::default())).merge(Toml::string(
            "[emias]\nurl = \"https://emias.local/soap\"\n[booking]\nhold_secs = 120\nnotify_url = \"https://portal.local/notify\"\n",
        ));
        let s = Settings::from_figment(fig).unwrap();
        assert_eq!(s.booking.hold_secs, 120);
        assert_eq!(s.emias.map(|e| e.days_ahead), Some(30));
    }
}
