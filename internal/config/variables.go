package config

import (
	"reflect"
	"slices"
)

// Variables returns the environment variables a settings type reads: the
// envconfig tags of spec's fields, of the structs it embeds too, sorted.
// spec is a settings value or a pointer to one, e.g. config.Worker{}.
func Variables(spec any) []string {
	var names []string
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return
		}
		for i := range t.NumField() {
			f := t.Field(i)
			if name, ok := f.Tag.Lookup("envconfig"); ok && name != "" {
				names = append(names, name)
				continue
			}
			if f.Anonymous {
				walk(f.Type)
			}
		}
	}
	walk(reflect.TypeOf(spec))
	slices.Sort(names)
	return slices.Compact(names)
}
