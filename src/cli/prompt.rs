//! The interactive SQL prompt (`supportfunnel sql` without a query), in the
//! manner of datafusion-cli: history, statements over several lines, `\d`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use datafusion::prelude::SessionContext;
use rustyline::error::ReadlineError;
use supportfunnel::engine::query;
use supportfunnel::render::output::{self, Format};

/// Interactive prompt. Statements end with `;` and may span lines; `\q`
/// quits, `\d` lists tables and views, `\d NAME` describes one. History is
/// kept in `~/.supportfunnel_history`.
pub async fn repl(ctx: &SessionContext) -> Result<()> {
    let mut editor = rustyline::DefaultEditor::new().context("cannot start the prompt")?;
    // History only for a person at a terminal, not for piped scripts.
    let history: Option<PathBuf> = std::io::stdin()
        .is_terminal()
        .then(|| std::env::var_os("HOME"))
        .flatten()
        .map(|h| PathBuf::from(h).join(".supportfunnel_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    eprintln!("supportfunnel SQL. End statements with `;`. \\d lists tables, \\q quits.");
    let mut buffer = String::new();
    // Statements that failed: a script piped in must not end with exit 0
    // after an error (a person at the terminal sees each error instead).
    let (mut run, mut failed) = (0usize, 0usize);
    let mut tally = |ok: bool| {
        run += 1;
        failed += usize::from(!ok);
    };
    loop {
        let prompt = if buffer.is_empty() {
            "supportfunnel> "
        } else {
            "           ...> "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                let trimmed = line.trim();
                if buffer.is_empty() {
                    match trimmed {
                        "" => continue,
                        "\\q" | "quit" | "exit" => break,
                        "\\?" | "help" => {
                            eprintln!("\\d            list tables and views\n\\d NAME       describe a table\n\\q            quit\nSQL;          run a statement (may span lines)");
                            continue;
                        }
                        _ => {}
                    }
                    if let Some(rest) = trimmed.strip_prefix("\\d") {
                        let _ = editor.add_history_entry(trimmed);
                        let rest = rest.trim();
                        let sql = if rest.is_empty() {
                            "SELECT table_name, table_type FROM information_schema.tables \
                             WHERE table_schema = 'public' ORDER BY table_name"
                                .to_string()
                        } else {
                            format!("DESCRIBE {rest}")
                        };
                        tally(run_and_print(ctx, &sql).await);
                        continue;
                    }
                }
                buffer.push_str(&line);
                buffer.push('\n');
                if trimmed.ends_with(';') {
                    let sql = std::mem::take(&mut buffer);
                    let _ = editor.add_history_entry(sql.trim());
                    tally(run_and_print(ctx, &sql).await);
                }
            }
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(anyhow::Error::new(e).context("prompt failed")),
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    if failed > 0 && !std::io::stdin().is_terminal() {
        anyhow::bail!("{failed} of {run} statements read from standard input failed");
    }
    Ok(())
}

/// Runs `sql` and prints its results; false when it failed.
async fn run_and_print(ctx: &SessionContext, sql: &str) -> bool {
    let started = Instant::now();
    match query::run_script(ctx, sql).await {
        Ok(results) => {
            let mut ok = true;
            for r in &results {
                for w in &r.warnings {
                    eprintln!("warning: {w}");
                }
                if let Err(e) = output::write_result(Format::Table, &r.schema, &r.batches, None) {
                    eprintln!("error: {e}");
                    ok = false;
                }
            }
            let rows = results.last().map(|r| r.num_rows()).unwrap_or(0);
            eprintln!("{rows} row(s) in {:.3}s", started.elapsed().as_secs_f64());
            ok
        }
        Err(e) => {
            eprintln!("error: {e}");
            false
        }
    }
}
