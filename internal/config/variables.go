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
	walkFields(reflect.TypeOf(spec), func(f reflect.StructField, _ []int) {
		names = append(names, f.Tag.Get("envconfig"))
	})
	slices.Sort(names)
	return slices.Compact(names)
}
