//! `deed dispute`: the disputes on the ledger, as the node reports them.

use anyhow::Result;
use clap::Subcommand;
use deed_client::api::DisputeView;

use super::{lines, Ctx, Out};

/// `deed dispute`.
#[derive(Subcommand, Debug)]
pub enum DisputeCmd {
    /// Every dispute, one line each.
    List,
    /// One dispute in full.
    Show {
        /// Dispute id.
        id: u64,
    },
}

fn verdict(d: &DisputeView) -> String {
    match &d.winner {
        Some(w) => format!("{w} won"),
        None => format!("{} (deadline height {})", d.phase, d.deadline),
    }
}

pub(super) async fn run(ctx: &Ctx, cmd: DisputeCmd) -> Result<Out> {
    match cmd {
        DisputeCmd::List => {
            let all = ctx.client.disputes().await?;
            let mut text = String::new();
            if all.is_empty() {
                text.push_str("no disputes\n");
            }
            for d in &all {
                text.push_str(&format!(
                    "{:>4}  job {:<5} rounds {:<3} range [{}, {}]  {}{}\n",
                    d.id,
                    d.job,
                    d.rounds,
                    d.range.0,
                    d.range.1,
                    verdict(d),
                    d.slashed
                        .as_ref()
                        .map(|s| format!("  slashed {s}"))
                        .unwrap_or_default(),
                ));
            }
            Ok(Out::new(serde_json::to_value(&all)?, text))
        }
        DisputeCmd::Show { id } => {
            let d = ctx.client.dispute(id).await?;
            let mut rows = vec![
                ("dispute", d.id.to_string()),
                ("job", d.job.to_string()),
                ("defender", d.defender.to_string()),
                ("challenger", d.challenger.to_string()),
                ("bond", d.bond.clone()),
                ("trace steps", d.steps.to_string()),
                ("rounds", d.rounds.to_string()),
                ("range", format!("[{}, {}]", d.range.0, d.range.1)),
                ("phase", d.phase.clone()),
            ];
            match &d.winner {
                Some(w) => rows.push(("verdict", format!("{w} won"))),
                None => rows.push(("deadline", format!("height {}", d.deadline))),
            }
            if let Some(s) = &d.slashed {
                rows.push(("slashed", s.clone()));
            }
            Ok(Out::new(serde_json::to_value(&d)?, lines(&rows)))
        }
    }
}
