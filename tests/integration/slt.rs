//! SQL-level cases (sqllogictest format) in `tests/slt/*.slt`, run against a
//! context from the library's own builder.

use std::path::PathBuf;

use datafusion::arrow::datatypes::DataType;
use sqllogictest::{DBOutput, DefaultColumnType};
use supportfunnel::engine::context::context_without_tables;
use supportfunnel::EngineOptions;

struct Db {
    ctx: datafusion::prelude::SessionContext,
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Db {
    type Error = datafusion::error::DataFusionError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let df = self.ctx.sql(sql).await?;
        let types: Vec<DefaultColumnType> = df
            .schema()
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
                    DefaultColumnType::Integer
                }
                DataType::Float32 | DataType::Float64 => DefaultColumnType::FloatingPoint,
                _ => DefaultColumnType::Text,
            })
            .collect();
        let is_statement = types.is_empty();
        let batches = df.collect().await?;
        if is_statement {
            return Ok(DBOutput::StatementComplete(0));
        }
        let rows = super::common::render(&batches)
            .into_iter()
            .map(|line| line.split('|').map(str::to_string).collect())
            .collect();
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}
}

#[tokio::test]
async fn slt_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    for file in files {
        // A small batch size so that partitions straddle many batches.
        let mut runner = sqllogictest::Runner::new(|| async {
            let opts = EngineOptions {
                batch_size: Some(2),
                ..EngineOptions::default()
            };
            Ok(Db {
                ctx: context_without_tables(&opts).unwrap(),
            })
        });
        runner
            .run_file_async(&file)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}
