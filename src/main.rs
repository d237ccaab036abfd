//! The `medgate` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use medgate::app::Gateway;
use medgate::config::Settings;
use medgate::store::Store;

/// medgate: regional healthcare data-exchange gateway (schedules and booking, referrals,
/// medical documents; SOAP and FHIR R4 at the edges).
#[derive(Parser, Debug)]
#[command(name = "medgate", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway with a configuration file (plus MEDGATE_* environment overrides).
    Serve {
        /// TOML configuration file; see deploy/medgate.example.toml.
        #[arg(long, short, env = "MEDGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Apply pending database migrations and exit.
    Migrate {
        /// TOML configuration file naming the database.
        #[arg(long, short, env = "MEDGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file and print the effective settings (secrets redacted).
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Make a detached CMS signature of a file (GOST R 34.10-2012, ECDSA or RSA by the key).
    Sign {
        /// File to sign.
        #[arg(long = "in")]
        input: PathBuf,
        /// Where to write the DER signature.
        #[arg(long)]
        out: PathBuf,
        /// PEM certificate (with --key).
        #[arg(long, requires = "key", conflicts_with = "pkcs12")]
        cert: Option<PathBuf>,
        /// PEM private key (with --cert).
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// PKCS#12 file instead of --cert/--key.
        #[arg(long)]
        pkcs12: Option<PathBuf>,
        /// Passphrase of the key or PKCS#12 file (prefer MEDGATE_SIGN_PASSPHRASE).
        #[arg(long, env = "MEDGATE_SIGN_PASSPHRASE", hide_env_values = true)]
        passphrase: Option<String>,
    },
    /// Check a detached CMS signature over a file: one signer, certificate and signing time
    /// present, signature valid; prints the signer.
    Verify {
        /// The signed file.
        #[arg(long = "in")]
        input: PathBuf,
        /// The DER signature.
        #[arg(long)]
        signature: PathBuf,
        /// PEM file of trusted CA certificates; without it only the signature is checked.
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Load commands that measure the gateway (figures for BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Run a self-contained demo: embedded SQLite, seeded region, demo client `demo-token`.
    Demo {
        /// Port to listen on (127.0.0.1).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Directory for the demo database; created if missing.
        #[arg(long, default_value = "./medgate-demo-data")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Document intake through HTTP on PostgreSQL: validation, two GOST CMS signatures,
    /// durable enqueue; with `openssl cms -sign` per-process signing side by side.
    Documents {
        /// PostgreSQL URL allowed to create a database (a fresh one is made and dropped).
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        pg: String,
        /// Documents to submit.
        #[arg(long, default_value_t = 20_000)]
        count: usize,
        /// Concurrent requests.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Document size in bytes.
        #[arg(long, default_value_t = 10_240)]
        size: usize,
        /// Directory holding org-gost256.* and doctor-gost256.* PEM files.
        #[arg(long, default_value = "tests/fixtures/keys")]
        keys: PathBuf,
        /// Signatures made with one `openssl cms -sign` process each (0 to skip).
        #[arg(long, default_value_t = 300)]
        openssl_count: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any key or certificate is parsed: GOST keys need the engine loaded.
    medgate::sign::init_crypto();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve { config } => {
            let settings = Settings::load(config.as_deref()).map_err(|e| e.to_string())?;
            medgate::telemetry::init(&settings.log);
            let gw = Gateway::start(settings).await.map_err(|e| e.to_string())?;
            gw.run_until_stopped().await.map_err(|e| e.to_string())
        }
        Command::Migrate { config } => {
            let settings = Settings::load(config.as_deref()).map_err(|e| e.to_string())?;
            medgate::telemetry::init(&settings.log);
            let store = Store::connect(&settings.database)
                .await
                .map_err(|e| e.to_string())?;
            store.migrate().await.map_err(|e| e.to_string())?;
            println!("migrations applied ({})", store.backend().name());
            Ok(())
        }
        Command::CheckConfig { file } => {
            let settings = Settings::load(Some(&file)).map_err(|e| e.to_string())?;
            use std::io::Write;
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = writeln!(
                std::io::stdout(),
                "{} is valid\n{settings:#?}",
                file.display()
            );
            Ok(())
        }
        Command::Sign {
            input,
            out,
            cert,
            key,
            pkcs12,
            passphrase,
        } => {
            use medgate::sign::Signer;
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            };
            let signer = match (cert, key, pkcs12) {
                (Some(c), Some(k), None) => medgate::sign::LocalSigner::from_pem(
                    &read(&k)?,
                    &read(&c)?,
                    passphrase.as_deref(),
                ),
                (None, None, Some(p)) => medgate::sign::LocalSigner::from_pkcs12(
                    &read(&p)?,
                    passphrase.as_deref().unwrap_or(""),
                ),
                _ => return Err("give --cert and --key, or --pkcs12".into()),
            }
            .map_err(|e| e.to_string())?;
            let cms = signer
                .sign_detached_cms(&read(&input)?)
                .map_err(|e| e.to_string())?;
            std::fs::write(&out, &cms)
                .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
            println!(
                "signed {} with {:?}: {} ({} bytes)",
                input.display(),
                signer.algorithm(),
                out.display(),
                cms.len()
            );
            Ok(())
        }
        Command::Verify {
            input,
            signature,
            ca,
        } => {
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            };
            let store = match ca {
                Some(path) => {
                    let mut b =
                        openssl::x509::store::X509StoreBuilder::new().map_err(|e| e.to_string())?;
                    for c in openssl::x509::X509::stack_from_pem(&read(&path)?)
                        .map_err(|e| e.to_string())?
                    {
                        b.add_cert(c).map_err(|e| e.to_string())?;
                    }
                    Some(b.build())
                }
                None => None,
            };
            let v = medgate::sign::verify_detached_cms(
                &read(&input)?,
                &read(&signature)?,
                store.as_deref(),
            )
            .map_err(|e| format!("signature NOT valid: {e}"))?;
            println!(
                "signature valid\n  signer: {}\n  serial: {}\n  signing time: {}\n  SNILS: {}\n  OGRN: {}\n  chain: {}",
                v.subject,
                v.serial,
                chrono::DateTime::from_timestamp(v.signing_time, 0).map(|t| t.to_rfc3339()).unwrap_or_default(),
                v.snils.as_deref().unwrap_or("-"),
                v.ogrn.as_deref().unwrap_or("-"),
                if store.is_some() { "verified against --ca" } else { "not checked (no --ca)" }
            );
            Ok(())
        }
        Command::Bench {
            what:
                BenchCommand::Documents {
                    pg,
                    count,
                    concurrency,
                    size,
                    keys,
                    openssl_count,
                },
        } => {
            let report = medgate::bench::documents(medgate::bench::DocumentBench {
                pg_admin_url: pg,
                count,
                concurrency,
                size,
                keys,
                openssl_count,
            })
            .await?;
            println!("{report}");
            Ok(())
        }
        Command::Demo { port, data_dir } => {
            std::fs::create_dir_all(&data_dir)
                .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
            let settings = medgate::demo::settings(port, &data_dir);
            medgate::telemetry::init(&settings.log);
            let registry = medgate::sim::remd::RemdSim::start(medgate::sim::remd::RemdSimConfig {
                gateway_token: medgate::demo::DEMO_TOKEN.into(),
                check: Some(std::sync::Arc::new(medgate::sim::remd::CryptoCheck)),
                ..Default::default()
            })
            .map_err(|e| format!("registry simulator: {e}"))?;
            let keys = medgate::demo::ensure_keys(&data_dir)?;
            let settings = medgate::demo::with_registry(settings, &registry.url, keys);
            let gw = Gateway::start(settings).await.map_err(|e| e.to_string())?;
            medgate::demo::seed(&gw.state.store)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "medgate demo on {url}\n  demo client token: {token}\n  registry simulator: {registry}\n  try: curl -H 'Authorization: Bearer {token}' {url}/fhir/Organization\n  submit a document: curl -H 'Authorization: Bearer {token}' -H 'Content-Type: application/fhir+json' --data @adapters/remd/samples/document-reference.json {url}/fhir/DocumentReference\n  stop with Ctrl-C",
                url = gw.url(),
                token = medgate::demo::DEMO_TOKEN,
                registry = registry.url
            );
            gw.run_until_stopped().await.map_err(|e| e.to_string())
        }
    }
}
