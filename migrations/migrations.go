// Package migrations embeds cdcflow's SQL migrations so the binaries carry
// them; internal/db applies them with goose.
package migrations

import (
	"embed"
	"io/fs"
)

// Dest holds the destination database migrations.
//
//go:embed dest/*.sql
var Dest embed.FS

// DestFS returns the destination migrations with the .sql files at its root.
func DestFS() fs.FS {
	sub, err := fs.Sub(Dest, "dest")
	if err != nil {
		panic(err) // the embedded path is fixed at build time
	}
	return sub
}
