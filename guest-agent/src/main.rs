//! cvm-agent entry point: wire the parts together and wait for the end.
//!
//! Start-up order is chosen for a fast, observable boot: the API listeners are bound before the
//! network has an address (binding 0.0.0.0 does not need one) and the "healthy" line is printed as
//! soon as they accept connections; DHCP runs on its own thread meanwhile.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use clap::Parser;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use cvm_agent::api::{self, ApiConfig, AppState, WorkloadView};
use cvm_agent::http::server::{self, Limits};
use cvm_agent::settings::Settings;
use cvm_agent::supervisor::{Backoff, Reaper, Supervisor};
use cvm_agent::workload::Workload;
use cvm_agent::{console, log, net, pid1, power_button};

const SYS_CLASS_NET: &str = "/sys/class/net";
const SYS_CLASS_INPUT: &str = "/sys/class/input";
const DEV_INPUT: &str = "/dev/input";

fn main() -> ExitCode {
    let pid1 = pid1::is_pid1();
    let settings = match Settings::try_parse() {
        Ok(s) => s,
        // --help and --version land here too; as PID 1 any exit would panic the kernel.
        Err(e) if !pid1 => e.exit(),
        Err(e) => {
            log!("invalid arguments or environment: {e}");
            pid1::power_off();
        }
    };
    log!(
        "starting (version {}, pid 1: {pid1})",
        env!("CARGO_PKG_VERSION")
    );
    if pid1 {
        pid1::take_over_ctrl_alt_del();
    }
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(api::BLOCKING_THREADS)
        .build()
        .context("creating the tokio runtime")
        .and_then(|rt| rt.block_on(run(settings, pid1)));
    if let Err(e) = &result {
        log!("fatal: {e:#}");
    }
    if pid1 {
        pid1::power_off();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// Runs until a shutdown is requested, then stops the services.
async fn run(settings: Settings, pid1: bool) -> Result<()> {
    let reaper = Reaper::new(pid1);
    tokio::spawn(reaper.clone().run());

    let (shutdown_tx, mut shutdown_rx) = mpsc::unbounded_channel::<&'static str>();
    watch_signals(&shutdown_tx)?;
    if settings.power_button.enabled(pid1) {
        let tx = shutdown_tx.clone();
        let n = power_button::watch(
            Path::new(SYS_CLASS_INPUT),
            Path::new(DEV_INPUT),
            move || {
                let _ = tx.send("ACPI power button");
            },
        );
        if n == 0 {
            log!("no power button input device found (are the button and evdev modules loaded?)");
        }
    }
    if settings.network.enabled(pid1) {
        std::thread::Builder::new()
            .name("network".into())
            .spawn(|| net::run(Path::new(SYS_CLASS_NET)))
            .context("starting the network thread")?;
    }

    let workload = match Workload::load(&settings.workload_dir) {
        Ok(w) => {
            log!("workload \"{}\": {} service(s)", w.name, w.services.len());
            let sup = Supervisor::start(
                &w,
                reaper.clone(),
                console::stdout_sink(),
                Backoff::default(),
            );
            WorkloadView::Running(Arc::new(sup))
        }
        Err(e) => {
            // Keep serving the API: a failed workload must still be attestable and diagnosable.
            log!("workload not started: {e:#}");
            WorkloadView::Failed(format!("{e:#}"))
        }
    };
    let supervisor = match &workload {
        WorkloadView::Running(s) => Some(s.clone()),
        WorkloadView::Failed(_) => None,
    };

    let state = AppState::new(
        ApiConfig {
            tpm: settings.tpm.clone(),
            eventlog: settings.eventlog.clone(),
            runtime_eventlog: settings.runtime_eventlog.clone(),
        },
        workload,
    );
    ensure!(
        settings.listen_local.ip().is_loopback(),
        "the local API address {} is not a loopback address: it serves /sign-message, which signs \
         with this boot's key for anyone who reaches it (set CVM_LISTEN_LOCAL to 127.0.0.1:PORT)",
        settings.listen_local
    );
    let nofile = server::descriptor_limit();
    let listeners = [
        (
            settings.listen,
            api::public_router(state.clone()),
            Limits::public(nofile, api::MAX_PUBLIC_BODY),
        ),
        (
            settings.listen_local,
            api::local_router(state),
            Limits::loopback(nofile, api::MAX_LOCAL_BODY),
        ),
    ];
    let connections = listeners.each_ref().map(|(_, _, l)| l.connections);
    for (addr, router, limits) in listeners {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the API to {addr}"))?;
        tokio::spawn(server::serve(listener, router, limits));
    }
    log!(
        "healthy: API on http://{} and http://{} (at most {} and {} connections of {nofile} \
         descriptors)",
        settings.listen,
        settings.listen_local,
        connections[0],
        connections[1]
    );

    let reason = shutdown_rx
        .recv()
        .await
        .unwrap_or("shutdown channel closed");
    log!("shutdown requested ({reason}): stopping services");
    if let Some(sup) = supervisor {
        sup.stop(settings.stop_grace()).await;
    }
    log!("services stopped");
    Ok(())
}

/// SIGTERM, SIGINT (Ctrl-Alt-Del once taken over) and SIGPWR all mean "shut down cleanly".
fn watch_signals(tx: &mpsc::UnboundedSender<&'static str>) -> Result<()> {
    for (kind, name) in [
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::from_raw(libc::SIGPWR), "SIGPWR"),
    ] {
        let mut stream = signal(kind).with_context(|| format!("installing the {name} handler"))?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                let _ = tx.send(name);
            }
        });
    }
    Ok(())
}
