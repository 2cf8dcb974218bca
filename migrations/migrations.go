// Package migrations embeds cdcflow's SQL migrations so the binaries carry
// them; internal/db applies them with goose.
package migrations

import (
	"embed"
	"io/fs"
)

// Dest holds the destination database migrations; Source the source's.
//
//go:embed dest/*.sql
var Dest embed.FS

//go:embed source/*.sql
var Source embed.FS

// DestFS returns the destination migrations with the .sql files at its root.
func DestFS() fs.FS { return sub(Dest, "dest") }

// SourceFS returns the source migrations with the .sql files at its root.
func SourceFS() fs.FS { return sub(Source, "source") }

func sub(fsys fs.FS, dir string) fs.FS {
	s, err := fs.Sub(fsys, dir)
	if err != nil {
		panic(err) // the embedded paths are fixed at build time
	}
	return s
}
