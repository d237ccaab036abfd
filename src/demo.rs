//! The built-in demo: an embedded SQLite gateway with a documented demo client and a seeded
//! region, so a newcomer can try every interface without any set-up.

use std::path::Path;

use crate::config::{BodyPolicy, ClientSettings, RoutePolicy, Secret, Settings};
use crate::store::organizations::Organization;
use crate::store::{Store, StoreError};

/// The demo client's bearer token (documented in the README; demo only).
pub const DEMO_TOKEN: &str = "demo-token";

/// Settings of the demo gateway: SQLite in `data_dir`, all bodies logged, one admin client.
pub fn settings(port: u16, data_dir: &Path) -> Settings {
    let mut s = Settings {
        instance: "medgate-demo".into(),
        ..Settings::default()
    };
    s.http.bind = format!("127.0.0.1:{port}");
    s.database.url = format!("sqlite://{}", data_dir.join("medgate-demo.db").display());
    s.transaction_log.default_bodies = BodyPolicy::Full;
    s.transaction_log.routes = vec![RoutePolicy {
        prefix: "/api/admin".into(),
        bodies: BodyPolicy::MetadataOnly,
        retention_days: Some(7),
    }];
    s.clients = vec![ClientSettings {
        id: "demo".into(),
        name: "Demo client (all scopes)".into(),
        token_sha256: Secret::new(hex::encode(crate::auth::token_hash(DEMO_TOKEN))),
        organizations: Vec::new(),
        scopes: vec!["admin".into()],
    }];
    s
}

/// The demo region's organizations.
pub fn organizations() -> Vec<Organization> {
    let districts = ["Central", "North", "South", "East"];
    (1..=12)
        .map(|i| Organization {
            oid: format!("1.2.643.5.1.13.13.12.2.77.{}", 7000 + i),
            name: format!("City Polyclinic No. {i} of the Demo Region Health Department"),
            short_name: format!("City Polyclinic No. {i}"),
            address: format!("{} Demo Street, Demo City", 10 + i),
            district: districts[(i as usize - 1) % districts.len()].into(),
            source: "demo".into(),
            active: true,
        })
        .collect()
}

/// Seeds the demo data (idempotent).
pub async fn seed(store: &Store) -> Result<(), StoreError> {
    store.upsert_organizations(&organizations()).await
}
