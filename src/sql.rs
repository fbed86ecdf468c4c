//! Ad-hoc SQL: run a script of statements, or an interactive prompt with
//! history and multi-line statements (in the manner of datafusion-cli).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::DFParser;
use rustyline::error::ReadlineError;

use crate::error::{Error, Result};
use crate::output::{self, Format};
use crate::readonly::Inputs;

/// The result of one statement.
#[derive(Debug, Clone)]
pub struct StatementResult {
    /// Output schema (empty for DDL).
    pub schema: SchemaRef,
    /// Output rows.
    pub batches: Vec<RecordBatch>,
}

impl StatementResult {
    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

/// Runs every statement of `sql` in order and returns each one's result.
/// Statements are planned one at a time, so a script may create a view and
/// query it.
pub async fn run_script(ctx: &SessionContext, sql: &str) -> Result<Vec<StatementResult>> {
    let statements = DFParser::parse_sql(sql)?;
    if statements.is_empty() {
        return Err(Error::invalid("no SQL statement given"));
    }
    let inputs = Inputs::of(ctx);
    let mut results = Vec::with_capacity(statements.len());
    for statement in statements {
        let plan = ctx.state().statement_to_plan(statement).await?;
        inputs.check_plan(&plan)?;
        let df = ctx.execute_logical_plan(plan).await?;
        let schema: SchemaRef = df.schema().inner().clone();
        let batches = df.collect().await?;
        results.push(StatementResult { schema, batches });
    }
    Ok(results)
}

/// Interactive prompt. Statements end with `;` and may span lines; `\q`
/// quits, `\d` lists tables and views, `\d NAME` describes one. History is
/// kept in `~/.supportfunnel_history`.
pub async fn repl(ctx: &SessionContext) -> Result<()> {
    let mut editor = rustyline::DefaultEditor::new()
        .map_err(|e| Error::invalid(format!("cannot start the prompt: {e}")))?;
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
            Err(e) => return Err(Error::invalid(format!("prompt failed: {e}"))),
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    if failed > 0 && !std::io::stdin().is_terminal() {
        return Err(Error::invalid(format!(
            "{failed} of {run} statements read from standard input failed"
        )));
    }
    Ok(())
}

/// Runs `sql` and prints its results; false when it failed.
async fn run_and_print(ctx: &SessionContext, sql: &str) -> bool {
    let started = Instant::now();
    match run_script(ctx, sql).await {
        Ok(results) => {
            let mut ok = true;
            for r in &results {
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
