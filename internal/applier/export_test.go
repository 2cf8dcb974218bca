package applier

const RecordSQL = recordSQL

func (a *Applier) SQLFor(name string, cols []string) (string, string) {
	t := a.tables[name]
	return t.deleteSQL, t.upsertSQL(cols, false)
}
