package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// applyConfig fills each flag the command line left unset, first from its
// CARRIER_<NAME> environment variable, then from the config file, so that
// the precedence is flags, environment, file.
func applyConfig(cmd *cobra.Command, file string) error {
	if file == "" {
		file = os.Getenv("CARRIER_CONFIG")
	}
	fromFile, err := readConfigFile(file)
	if err != nil {
		return err
	}
	var errs []string
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "config" {
			return
		}
		env := "CARRIER_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		value, ok := os.LookupEnv(env)
		source := env
		if !ok {
			value, ok = fromFile[f.Name]
			source = file
		}
		if !ok {
			return
		}
		if err := f.Value.Set(value); err != nil {
			errs = append(errs, fmt.Sprintf("%s: --%s=%q: %v", source, f.Name, value, err))
			return
		}
		f.Changed = true
	})
	if len(errs) > 0 {
		return fmt.Errorf("bad settings:\n  %s", strings.Join(errs, "\n  "))
	}
	return nil
}

// readConfigFile reads a flat YAML map of flag names to values; lists
// become comma-separated values as on the command line.
func readConfigFile(path string) (map[string]string, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var raw map[string]any
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		switch v := v.(type) {
		case []any:
			parts := make([]string, len(v))
			for i, p := range v {
				parts[i] = fmt.Sprint(p)
			}
			out[k] = strings.Join(parts, ",")
		case map[string]any:
			return nil, fmt.Errorf("config file %s: key %q: nested maps are not settings; use flag names as top-level keys", path, k)
		default:
			out[k] = fmt.Sprint(v)
		}
	}
	return out, nil
}
