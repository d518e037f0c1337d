//! `push-operator` binary: `crd`, `render -f pc.yaml`, `run` (the default).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use push_operator::{crd, objects};

#[derive(Parser)]
#[command(
    version,
    about = "Kubernetes operator for Push (PushCluster, push.dev/v1alpha1)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the PushCluster CustomResourceDefinition as YAML.
    Crd,
    /// Print every object the operator would apply for a PushCluster file.
    Render {
        /// PushCluster manifest (YAML); `-` reads standard input.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Image of the operator, used by the Redis boot init containers.
        #[arg(long, env = "PUSH_OPERATOR_IMAGE")]
        operator_image: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crd) => {
            print!("{}", crd::crd_yaml()?);
            Ok(())
        }
        Some(Command::Render {
            file,
            operator_image,
        }) => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let mut settings = objects::Settings::default();
            if let Some(image) = operator_image {
                settings.operator_image = image;
            }
            print!("{}", push_operator::render::render(&text, &settings)?);
            Ok(())
        }
        None => anyhow::bail!("run: not implemented yet"),
    }
}
