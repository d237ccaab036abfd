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
    /// Print an argon2 hash of a dashboard operator's password (read from standard input,
    /// one line) for `[[dashboard.operators]] password_hash`.
    HashPassword,
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
    /// Synchronize data from external systems.
    Sync {
        #[command(subcommand)]
        what: SyncCommand,
    },
    /// Background jobs.
    Job {
        #[command(subcommand)]
        what: JobCommand,
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
        /// Port of the second region's gateway (127.0.0.1); default: the next one.
        #[arg(long)]
        second_port: Option<u16>,
        /// Directory for the demo database; created if missing.
        #[arg(long, default_value = "./medgate-demo-data")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum JobCommand {
    /// Run one job now, as one of the replicas would (its run claimed, under its lock,
    /// recorded); a progress bar on a terminal, plain lines otherwise.
    Run {
        /// The job, e.g. `retention` (`GET /api/admin/jobs` lists them).
        name: String,
        /// Configuration file (the gateway's).
        #[arg(long, env = "MEDGATE_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum SyncCommand {
    /// Schedules and slots from every configured clinic system (`[emias]`, `[fhir_mis]`).
    Schedules {
        /// TOML configuration file.
        #[arg(long, short, env = "MEDGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Only this organization (FRMO OID); default: every known organization.
        #[arg(long)]
        org: Option<String>,
        /// Full sync of the whole window (else: incremental from the change token).
        #[arg(long)]
        full: bool,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Referrals inside a region through FHIR: created (acceptance rules checked) and then
    /// accepted by the target, closed loop, on a fresh PostgreSQL database.
    Referrals {
        /// PostgreSQL URL allowed to create a database (a fresh one is made and dropped).
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        pg: String,
        /// Referrals to create and accept.
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// Concurrent connections (closed loop).
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Across a peer link: the referring clinic in region 78, the target in region 77,
        /// two gateways over mutual TLS.
        #[arg(long)]
        peer: bool,
    },
    /// Booking throughput and latency through FHIR `$book` (closed loop), each booking
    /// forwarded to the simulated city MIS, on PostgreSQL with a synchronized region.
    Booking {
        /// PostgreSQL URL allowed to create a database (a fresh one is made and dropped).
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        pg: String,
        /// Slots stored before the run.
        #[arg(long, default_value_t = 1_000_000)]
        slots: u64,
        /// Bookings to make.
        #[arg(long, default_value_t = 20_000)]
        count: usize,
        /// Concurrent connections (closed loop).
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// FHIR Slot search throughput and latency through HTTP (closed loop), on PostgreSQL
    /// with a synchronized region of the given size.
    Slots {
        /// PostgreSQL URL allowed to create a database (a fresh one is made and dropped).
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        pg: String,
        /// Slots stored before the run.
        #[arg(long, default_value_t = 1_000_000)]
        slots: u64,
        /// Concurrent connections (closed loop).
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Seconds of load.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Open loop at this many requests per second (latency from each request's
        /// scheduled time); 0 = closed loop with --concurrency connections.
        #[arg(long, default_value_t = 0)]
        rate: u32,
        /// Search through the SOAP hub (GetAvaibleAppointments) instead of FHIR Slot.
        #[arg(long)]
        soap: bool,
        /// What the transaction log records of each search: metadata, full or none.
        #[arg(long, default_value = "metadata", value_parser = ["metadata", "full", "none"])]
        record: String,
    },
    /// The retention job's pruning rate: expired transaction records (and as many young
    /// ones, kept) on a fresh PostgreSQL database, pruned in bounded batches.
    Prune {
        /// PostgreSQL URL allowed to create a database (a fresh one is made and dropped).
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        pg: String,
        /// Expired records to prune.
        #[arg(long, default_value_t = 300_000)]
        rows: usize,
        /// Rows per statement.
        #[arg(long, default_value_t = 5000)]
        batch: u32,
    },
    /// The schedule reconciliation of a whole region: a simulated city MIS synchronized
    /// into a fresh PostgreSQL database, a share of its slots drifted silently on both
    /// sides, every organization reconciled.
    Reconcile {
        /// PostgreSQL URL allowed to create a database (a fresh one is made and dropped).
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        pg: String,
        /// Slots in the region (approximately).
        #[arg(long, default_value_t = 1_000_000)]
        slots: u64,
        /// Share of the slots that drift.
        #[arg(long, default_value_t = 0.01)]
        drift: f64,
    },
    /// The reference-book sync: ICD-10 (about 17,000 rows a version) from the NSI
    /// simulator into a fresh store, through the adapter and the service.
    Nsi {
        /// PostgreSQL URL allowed to create a database (a fresh one is made and dropped);
        /// without it, a SQLite file in a temporary directory.
        #[arg(long)]
        database_url: Option<String>,
        /// Which versions: all three, or only the latest.
        #[arg(long, default_value = "all", value_parser = ["all", "latest"])]
        versions: String,
        /// Rows per data page (1 to 500).
        #[arg(long, default_value_t = 500)]
        page_size: u32,
    },
    /// Full schedule sync of a simulated city MIS into a fresh PostgreSQL database.
    Sync {
        /// PostgreSQL URL allowed to create a database (a fresh one is made and dropped).
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        pg: String,
        /// Slots in the simulated region (approximately).
        #[arg(long, default_value_t = 1_000_000)]
        slots: u64,
        /// Organizations synchronized concurrently.
        #[arg(long, default_value_t = 2)]
        parallel: usize,
        /// Keep the database and print its URL (to serve it and load it with wrk).
        #[arg(long)]
        keep: bool,
    },
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
    /// Soak: an open-loop mix (80% slot search FHIR/SOAP, 15% book then cancel, 5% document
    /// submission delivered to a registry simulator) for minutes, on PostgreSQL; reports
    /// per-operation latency and errors, and the process's RSS over time with its slope.
    Soak {
        /// PostgreSQL URL allowed to create a database (a fresh one is made and dropped).
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        pg: String,
        /// Slots stored before the run; bookings take free internet-channel ones round-robin.
        #[arg(long, default_value_t = 20_000)]
        slots: u64,
        /// Seconds of load.
        #[arg(long, default_value_t = 600)]
        seconds: u32,
        /// Requests per second offered on a fixed schedule (open loop).
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// Seconds between samples of the process's resident memory.
        #[arg(long, default_value_t = 10)]
        rss_every_secs: u32,
        /// Directory holding org-gost256.* and doctor-gost256.* PEM files.
        #[arg(long, default_value = "tests/fixtures/keys")]
        keys: PathBuf,
        /// Run the gateway as `medgate serve` in its own process, so the RSS series is
        /// the gateway's alone (the simulators keep everything they were sent).
        #[arg(long)]
        gateway_process: bool,
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
        Command::HashPassword => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| format!("standard input: {e}"))?;
            let password = line.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                return Err("no password on standard input".into());
            }
            println!("{}", medgate::services::sessions::hash_password(password)?);
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
        Command::Job {
            what: JobCommand::Run { name, config },
        } => {
            let settings = Settings::load(config.as_deref()).map_err(|e| e.to_string())?;
            medgate::telemetry::init(&settings.log);
            run_job(settings, &name).await
        }
        Command::Sync {
            what: SyncCommand::Schedules { config, org, full },
        } => {
            let settings = Settings::load(config.as_deref()).map_err(|e| e.to_string())?;
            medgate::telemetry::init(&settings.log);
            sync_schedules(settings, org, full).await
        }
        Command::Bench {
            what:
                BenchCommand::Referrals {
                    pg,
                    count,
                    concurrency,
                    peer,
                },
        } => {
            let report = medgate::bench::referrals(medgate::bench::ReferralBench {
                pg_admin_url: pg,
                count,
                concurrency,
                across_peer: peer,
            })
            .await?;
            println!("{report}");
            Ok(())
        }
        Command::Bench {
            what:
                BenchCommand::Booking {
                    pg,
                    slots,
                    count,
                    concurrency,
                },
        } => {
            let report = medgate::bench::booking(medgate::bench::BookingBench {
                pg_admin_url: pg,
                slots,
                count,
                concurrency,
            })
            .await?;
            println!("{report}");
            Ok(())
        }
        Command::Bench {
            what:
                BenchCommand::Slots {
                    pg,
                    slots,
                    concurrency,
                    seconds,
                    rate,
                    soap,
                    record,
                },
        } => {
            let record = match record.as_str() {
                "full" => medgate::config::BodyPolicy::Full,
                "none" => medgate::config::BodyPolicy::None,
                _ => medgate::config::BodyPolicy::MetadataOnly,
            };
            let report = medgate::bench::slot_search(medgate::bench::SlotSearchBench {
                pg_admin_url: pg,
                slots,
                concurrency,
                seconds,
                rate,
                soap,
                record,
            })
            .await?;
            println!("{report}");
            Ok(())
        }
        Command::Bench {
            what: BenchCommand::Reconcile { pg, slots, drift },
        } => {
            let report = medgate::bench::reconcile(medgate::bench::ReconcileBench {
                pg_admin_url: pg,
                slots,
                drift,
            })
            .await?;
            println!("{report}");
            Ok(())
        }
        Command::Bench {
            what:
                BenchCommand::Nsi {
                    database_url,
                    versions,
                    page_size,
                },
        } => {
            let report = medgate::bench::nsi(medgate::bench::NsiBench {
                pg_admin_url: database_url,
                all_versions: versions == "all",
                page_size: page_size.clamp(1, 500),
            })
            .await?;
            println!("{report}");
            Ok(())
        }
        Command::Bench {
            what: BenchCommand::Prune { pg, rows, batch },
        } => {
            let report = medgate::bench::prune(medgate::bench::PruneBench {
                pg_admin_url: pg,
                rows,
                batch,
            })
            .await?;
            println!("{report}");
            Ok(())
        }
        Command::Bench {
            what:
                BenchCommand::Sync {
                    pg,
                    slots,
                    parallel,
                    keep,
                },
        } => {
            let (n, t, kept) = medgate::bench::sync(medgate::bench::SyncBench {
                pg_admin_url: pg,
                slots,
                parallel,
                keep,
            })
            .await?;
            if let Some(url) = kept {
                println!("database kept: {url}");
            }
            println!(
                "full sync: {n} slots in {:.1} s = {:.0} slots/s (simulated city MIS over SOAP -> PostgreSQL, {parallel} organizations at a time)",
                t.as_secs_f64(),
                n as f64 / t.as_secs_f64()
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
        Command::Bench {
            what:
                BenchCommand::Soak {
                    pg,
                    slots,
                    seconds,
                    rate,
                    rss_every_secs,
                    keys,
                    gateway_process,
                },
        } => {
            let gateway_binary = if gateway_process {
                Some(std::env::current_exe().map_err(|e| format!("own binary: {e}"))?)
            } else {
                None
            };
            let report = medgate::bench::soak(medgate::bench::SoakBench {
                pg_admin_url: pg,
                slots,
                seconds,
                rate,
                rss_every_secs,
                keys,
                gateway_binary,
            })
            .await?;
            println!("{report}");
            Ok(())
        }
        Command::Demo {
            port,
            second_port,
            data_dir,
        } => {
            std::fs::create_dir_all(&data_dir)
                .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
            let second = second_port.unwrap_or(port.saturating_add(1));
            let demo = medgate::demo::Demo::start(port, second, &data_dir).await?;
            demo.print_welcome();
            demo.run().await
        }
    }
}

/// `medgate job run NAME`: the gateway's services on its database, nothing running on its
/// own, the job run once by hand.
async fn run_job(mut settings: Settings, name: &str) -> Result<(), String> {
    use std::io::IsTerminal;
    settings.http.bind = "127.0.0.1:0".into();
    settings.http.tls = None;
    settings.federation.iter_mut().for_each(|f| f.listen = None);
    settings.jobs.run_scheduled = false;
    let gateway = medgate::app::Gateway::start(settings)
        .await
        .map_err(|e| e.to_string())?;
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_message(format!("{name}: running"));
        b.enable_steady_tick(std::time::Duration::from_millis(120));
        b
    });
    let last = std::sync::atomic::AtomicU64::new(0);
    let progress = |n: u64| match &bar {
        Some(b) => b.set_message(format!("{name}: {n} handled")),
        // Plain lines: one per thousand handled.
        None => {
            if n / 1000 > last.swap(n, std::sync::atomic::Ordering::Relaxed) / 1000 {
                println!("{name}: {n} handled");
            }
        }
    };
    let result = gateway.state.operations.run_job(name, &progress).await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    gateway.stop().await;
    let run = result.map_err(|e| e.to_string())?;
    println!(
        "{name}: {} ({} steps, {} found, {} repaired){}",
        run.outcome,
        run.counts.examined,
        run.counts.found,
        run.counts.repaired,
        run.error.map(|e| format!(": {e}")).unwrap_or_default()
    );
    if run.outcome == medgate::model::job::RunOutcome::Ok {
        Ok(())
    } else {
        Err(format!("{name} did not run to the end"))
    }
}

async fn sync_schedules(settings: Settings, org: Option<String>, full: bool) -> Result<(), String> {
    use medgate::services::schedule_sync::{
        full_sync, incremental_sync, ScheduleSource, SyncReport,
    };
    if settings.emias.is_none() && settings.fhir_mis.is_none() {
        return Err("no [emias] or [fhir_mis] section in the configuration".into());
    }
    let store = Store::connect(&settings.database)
        .await
        .map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    let (txlog, writer) =
        medgate::exchange::TxLog::start(store.clone(), settings.transaction_log.clone());
    let secs = std::time::Duration::from_secs;
    let mut clients: Vec<(Box<dyn ScheduleSource>, u32)> = Vec::new();
    if let Some(e) = &settings.emias {
        clients.push((
            Box::new(medgate::adapters::emias::EmiasClient::new(
                &e.url,
                secs(e.timeout_secs),
                txlog.clone(),
            )),
            e.days_ahead,
        ));
    }
    if let Some(e) = &settings.fhir_mis {
        clients.push((
            Box::new(medgate::adapters::fhir_mis::FhirMisClient::new(
                &e.url,
                secs(e.timeout_secs),
                txlog.clone(),
            )),
            e.days_ahead,
        ));
    }
    let mut result: Result<SyncReport, String> = Ok(SyncReport::default());
    let add = |total: &mut SyncReport, r: SyncReport| {
        total.practitioners += r.practitioners;
        total.slots += r.slots;
        total.withdrawn += r.withdrawn;
    };
    if full {
        let orgs =
            match org {
                Some(o) => vec![medgate::model::Oid::parse_organization(&o)
                    .map_err(|e| format!("--org: {e}"))?],
                None => store
                    .list_organizations(None, None, 0, 100_000)
                    .await
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|o| o.oid)
                    .collect(),
            };
        let bar = indicatif::ProgressBar::new((orgs.len() * clients.len()) as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} organizations  {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let today = chrono::Utc::now().date_naive();
        let mut total = SyncReport::default();
        'all: for (client, days) in &clients {
            for o in &orgs {
                let source = client.source();
                bar.set_message(format!("{source} {o}"));
                let base = total.slots;
                match full_sync(
                    &store,
                    client.as_ref(),
                    o,
                    today,
                    *days,
                    medgate::model::time::now_ms(),
                    &|n| bar.set_message(format!("{source} {o}: {} slots", base + n)),
                )
                .await
                {
                    Ok(r) => add(&mut total, r),
                    Err(e) => {
                        result = Err(format!("{source} {o}: {e}"));
                        break 'all;
                    }
                }
                bar.inc(1);
            }
        }
        bar.finish_and_clear();
        if result.is_ok() {
            store
                .refresh_schedule_statistics()
                .await
                .map_err(|e| e.to_string())?;
            result = Ok(total);
        }
    } else {
        let mut total = SyncReport::default();
        for (client, _) in &clients {
            match incremental_sync(&store, client.as_ref(), medgate::model::time::now_ms()).await {
                Ok(r) => add(&mut total, r),
                Err(e) => {
                    result = Err(format!("{}: {e}", client.source()));
                    break;
                }
            }
        }
        if result.is_ok() {
            result = Ok(total);
        }
    }
    txlog.flush().await;
    // Every log handle must be gone before the writer can finish.
    drop(clients);
    drop(txlog);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), writer).await;
    let r = result?;
    println!(
        "schedules synchronized: {} practitioners, {} slots, {} withdrawn",
        r.practitioners, r.slots, r.withdrawn
    );
    Ok(())
}
