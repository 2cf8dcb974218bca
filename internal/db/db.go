// Package db opens PostgreSQL pools and applies cdcflow's migrations.
package db

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
)

// Open returns a pool to dsn after checking that the server answers.
// configure, when not nil, may adjust the pool configuration first.
func Open(ctx context.Context, dsn string, configure func(*pgxpool.Config)) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse database DSN: %w", err)
	}
	if configure != nil {
		configure(cfg)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", cfg.ConnConfig.Host, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to database %s:%d: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	return pool, nil
}

// Migrate applies the migrations in fsys (the root holds the .sql files) to
// the database at dsn. Already applied migrations are skipped, so it is safe
// to run at every start. The version table lives in the cdcflow schema.
func Migrate(ctx context.Context, dsn string, fsys fs.FS) error {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return fmt.Errorf("parse database DSN: %w", err)
	}
	sqlDB := stdlib.OpenDB(*cfg)
	defer sqlDB.Close()
	if err := createSchema(ctx, sqlDB); err != nil {
		return err
	}
	provider, err := goose.NewProvider(goose.DialectPostgres, sqlDB, fsys,
		goose.WithTableName("cdcflow.schema_migrations"),
		goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("load migrations: %w", err)
	}
	if _, err := provider.Up(ctx); err != nil {
		return fmt.Errorf("apply migrations: %w", err)
	}
	return nil
}

func createSchema(ctx context.Context, sqlDB *sql.DB) error {
	// goose creates its version table before the first migration runs, so
	// the schema that holds it must exist already.
	if _, err := sqlDB.ExecContext(ctx, `CREATE SCHEMA IF NOT EXISTS cdcflow`); err != nil {
		return fmt.Errorf("create schema cdcflow: %w", err)
	}
	return nil
}
