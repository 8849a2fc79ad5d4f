use clap::Parser;
use spade_server::{app, ServerConfig};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let config = ServerConfig::parse();
    match app::start(config).await {
        Ok(server) => {
            app::stop_on_signals(&server);
            if let Err(err) = server.warmed_up().await {
                eprintln!("error: {err:#}");
                server.shutdown().await;
                std::process::exit(1);
            }
            server.wait().await;
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::exit(1);
        }
    }
}
