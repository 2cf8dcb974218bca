package deployments

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/prometheus/prometheus/model/rulefmt"
	"go.yaml.in/yaml/v3"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/config"
	"github.com/cdcflow/cdcflow/internal/demo"
	"github.com/cdcflow/cdcflow/internal/kafkax"
)

const (
	composeFile = "docker-compose.yml"
	envExample  = ".env.example"
	// metricsPort is where cdcflow's programs serve /metrics, /healthz and
	// /readyz in their containers, and where Prometheus scrapes them.
	metricsPort = "9464"
)

// program is what the compose file may run from cdcflow's image, and what
// it reads.
type program struct {
	vars []string     // the environment variables it reads
	load func() error // loads and validates its settings; nil: none to call
}

func programs(t *testing.T) map[string]program {
	t.Helper()
	return map[string]program{
		"capture": {config.Variables(config.Capture{}), func() error { _, err := config.LoadCapture(); return err }},
		"starter": {config.Variables(config.Starter{}), func() error { _, err := config.LoadStarter(); return err }},
		"worker":  {config.Variables(config.Worker{}), func() error { _, err := config.LoadWorker(); return err }},
		"dlq":     {config.Variables(config.TemporalClient{}), func() error { _, err := config.LoadTemporal(); return err }},
		"codec":   {codecVariables(t), nil},
	}
}

// codecVariables reads the codec's variables from its source: its settings
// type belongs to package main.
func codecVariables(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "codec", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	var vars []string
	for _, m := range regexp.MustCompile(`envconfig:"([A-Z0-9_]+)"`).FindAllSubmatch(src, -1) {
		vars = append(vars, string(m[1]))
	}
	if regexp.MustCompile(`(?m)^\s+config\.Log$`).Match(src) {
		vars = append(vars, config.Variables(config.Log{})...)
	}
	if len(vars) == 0 {
		t.Fatal("codec/main.go: found no envconfig tags")
	}
	return vars
}

// load loads the compose file as docker compose does, with every profile,
// with the environment of envFiles only (none: the file's defaults).
func load(t *testing.T, envFiles ...string) *types.Project {
	t.Helper()
	opts := []cli.ProjectOptionsFn{cli.WithWorkingDirectory("."), cli.WithProfiles([]string{"*"})}
	if len(envFiles) > 0 {
		opts = append(opts, cli.WithEnvFiles(envFiles...), cli.WithDotEnv)
	}
	o, err := cli.NewProjectOptions([]string{composeFile}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	p, err := o.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	return p
}

// services returns every service, those of inactive profiles too.
func services(p *types.Project) map[string]types.ServiceConfig {
	all := maps.Clone(p.Services)
	maps.Copy(all, p.DisabledServices)
	return all
}

func sortedNames(m map[string]types.ServiceConfig) []string {
	return slices.Sorted(maps.Keys(m))
}

// env returns a service's environment as plain strings.
func env(s types.ServiceConfig) map[string]string {
	out := map[string]string{}
	for k, v := range s.Environment {
		if v != nil {
			out[k] = *v
		}
	}
	return out
}

// cdcflowServices returns the services built from the repository's
// Dockerfile, by the program they run.
func cdcflowServices(t *testing.T, p *types.Project) map[string]types.ServiceConfig {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]types.ServiceConfig{}
	for _, name := range sortedNames(services(p)) {
		s := services(p)[name]
		if s.Build == nil {
			continue
		}
		if filepath.Clean(s.Build.Context) != root || s.Build.Dockerfile != "Dockerfile" {
			t.Errorf("service %s: builds %s/%s, want the repository's Dockerfile", name, s.Build.Context, s.Build.Dockerfile)
			continue
		}
		run := append(slices.Clone(s.Entrypoint), s.Command...)
		if len(run) == 0 {
			t.Errorf("service %s: no command: say which program it runs", name)
			continue
		}
		out[name] = s
	}
	return out
}

// programOf returns the program a cdcflow service runs.
func programOf(s types.ServiceConfig) string {
	return append(slices.Clone(s.Entrypoint), s.Command...)[0]
}

func TestComposeLoads(t *testing.T) {
	p := load(t)
	for _, want := range []string{"source-db", "dest-db", "kafka", "kafka-topics", "temporal-db", "temporal-schema", "temporal",
		"temporal-setup", "temporal-ui", "capture", "starter", "worker", "prometheus", "grafana"} {
		if _, ok := services(p)[want]; !ok {
			t.Errorf("no service %s", want)
		}
	}
	// The documented settings load too, and are the file's defaults.
	withExample := load(t, envExample)
	if !slices.Equal(sortedNames(services(p)), sortedNames(services(withExample))) {
		t.Errorf("services differ with %s", envExample)
	}
	for name, s := range services(p) {
		if got, want := env(services(withExample)[name]), env(s); !maps.Equal(got, want) {
			t.Errorf("service %s: environment with %s differs from the defaults:\n got %v\nwant %v", name, envExample, got, want)
		}
	}
}

// TestEnvExample checks that deployments/.env.example lists every variable
// the compose file interpolates, each with the file's default.
func TestEnvExample(t *testing.T) {
	compose, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	defaults := map[string]string{}
	for _, m := range regexp.MustCompile(`\$\{([A-Z0-9_]+)(:?-([^}]*))?\}`).FindAllStringSubmatch(string(compose), -1) {
		name, def := m[1], m[3]
		if m[2] == "" {
			t.Errorf("%s: ${%s} has no default: give it one for a trial run", composeFile, name)
		}
		if prev, ok := defaults[name]; ok && prev != def {
			t.Errorf("%s: ${%s} has two defaults, %q and %q", composeFile, name, prev, def)
		}
		defaults[name] = def
	}
	example := readEnvFile(t, envExample)
	for name, def := range defaults {
		v, ok := example[name]
		switch {
		case !ok:
			t.Errorf("%s: %s (default %q) is not listed", envExample, name, def)
		case v != def:
			t.Errorf("%s: %s=%q, but the compose file's default is %q", envExample, name, v, def)
		}
	}
	for name := range example {
		if _, ok := defaults[name]; !ok {
			t.Errorf("%s: %s is not used by %s", envExample, name, composeFile)
		}
	}
}

func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("%s: %q is not NAME=value", path, line)
			continue
		}
		out[k] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// pinned reports why an image reference is not pinned to a version.
func pinned(ref string) error {
	name, digest, hasDigest := strings.Cut(ref, "@")
	if hasDigest && digest != "" {
		return nil
	}
	last := name[strings.LastIndex(name, "/")+1:]
	_, tag, ok := strings.Cut(last, ":")
	switch {
	case !ok || tag == "":
		return fmt.Errorf("%q has no tag", ref)
	case tag == "latest" || tag == "stable" || tag == "edge":
		return fmt.Errorf("%q is tagged %s, not a version", ref, tag)
	case !regexp.MustCompile(`\d`).MatchString(tag) && tag != "dev":
		return fmt.Errorf("%q: tag %s names no version", ref, tag)
	}
	return nil
}

func TestImagesPinned(t *testing.T) {
	for name, s := range services(load(t)) {
		if s.Image == "" {
			t.Errorf("service %s: no image", name)
			continue
		}
		if err := pinned(s.Image); err != nil {
			t.Errorf("service %s: %v", name, err)
		}
	}
	// The Temporal tools set up the schema of the server they run with.
	all := services(load(t))
	server := strings.TrimPrefix(all["temporal"].Image, "temporalio/server:")
	for _, name := range []string{"temporal-schema", "temporal-setup"} {
		if tools := strings.TrimPrefix(all[name].Image, "temporalio/admin-tools:"); tools != server {
			t.Errorf("service %s: admin-tools %s with server %s: want the same version", name, tools, server)
		}
	}
}

func TestHealthAndDependencies(t *testing.T) {
	all := services(load(t))
	oneShot := func(s types.ServiceConfig) bool { return s.Restart == "no" || s.Restart == "" }
	for _, name := range sortedNames(all) {
		s := all[name]
		hasCheck := s.HealthCheck != nil && !s.HealthCheck.Disable && len(s.HealthCheck.Test) > 0
		if !oneShot(s) && !hasCheck {
			t.Errorf("service %s: runs for good (restart: %s) without a healthcheck", name, s.Restart)
		}
		if oneShot(s) && len(s.Profiles) == 0 && !dependedOnToComplete(all, name) {
			t.Errorf("service %s: a one-shot nothing waits for (service_completed_successfully)", name)
		}
		for dep, d := range s.DependsOn {
			ds, ok := all[dep]
			if !ok {
				t.Errorf("service %s: depends on unknown service %s", name, dep)
				continue
			}
			switch d.Condition {
			case types.ServiceConditionHealthy:
				if ds.HealthCheck == nil || ds.HealthCheck.Disable || len(ds.HealthCheck.Test) == 0 {
					t.Errorf("service %s: waits for %s to be healthy, which has no healthcheck", name, dep)
				}
			case types.ServiceConditionCompletedSuccessfully:
				if !oneShot(ds) {
					t.Errorf("service %s: waits for %s to complete, which restarts (%s)", name, dep, ds.Restart)
				}
			default:
				t.Errorf("service %s: depends on %s with condition %q: want service_healthy or service_completed_successfully",
					name, dep, d.Condition)
			}
		}
	}
	// The server starts on the schema the admin tools set up.
	if c := all["temporal"].DependsOn["temporal-schema"].Condition; c != types.ServiceConditionCompletedSuccessfully {
		t.Errorf("temporal: waits for temporal-schema with %q, want service_completed_successfully", c)
	}
}

func dependedOnToComplete(all map[string]types.ServiceConfig, name string) bool {
	for _, s := range all {
		if d, ok := s.DependsOn[name]; ok && d.Condition == types.ServiceConditionCompletedSuccessfully {
			return true
		}
	}
	return false
}

// clearEnv unsets names for the rest of the test.
func clearEnv(t *testing.T, names []string) {
	for _, name := range names {
		t.Setenv(name, "")
		os.Unsetenv(name)
	}
}

func TestCdcflowServices(t *testing.T) {
	p := load(t)
	all := services(p)
	progs := programs(t)
	built := dockerfilePrograms(t)
	svcs := cdcflowServices(t, p)
	for _, want := range []string{"capture", "starter", "worker"} {
		if _, ok := svcs[want]; !ok {
			t.Errorf("no service runs %s from the repository's image", want)
		}
	}
	for _, name := range sortedNames(svcs) {
		s := svcs[name]
		prog := programOf(s)
		pr, ok := progs[prog]
		if !ok {
			t.Errorf("service %s: runs %q, which is none of %v", name, prog, slices.Sorted(maps.Keys(progs)))
			continue
		}
		if !slices.Contains(built, prog) {
			t.Errorf("service %s: runs %s, which the Dockerfile does not build", name, prog)
		}
		vars := env(s)
		for k := range vars {
			if strings.HasPrefix(k, "CDCFLOW_") || strings.HasPrefix(k, "KAFKA_") || strings.HasPrefix(k, "TEMPORAL_") {
				if !slices.Contains(pr.vars, k) {
					t.Errorf("service %s: sets %s, which %s does not read (it reads %v)", name, k, prog, pr.vars)
				}
			}
		}
		// The settings load as the program loads them: required variables
		// set, every value valid.
		if pr.load != nil {
			t.Run(name, func(t *testing.T) {
				clearEnv(t, pr.vars)
				for k, v := range vars {
					t.Setenv(k, v)
				}
				if err := pr.load(); err != nil {
					t.Errorf("service %s: %s does not start with its environment: %v", name, prog, err)
				}
			})
		}
		// Where the programs connect is a service of the stack.
		for k, v := range vars {
			for _, host := range hostsOf(k, v) {
				if _, ok := all[host]; !ok {
					t.Errorf("service %s: %s=%s: %s is no service", name, k, v, host)
				}
			}
		}
		if addr, ok := vars["CDCFLOW_METRICS_ADDR"]; ok {
			checkMetrics(t, name, s, addr)
		}
	}
	for _, prog := range []string{"capture", "worker"} {
		if s, ok := svcs[prog]; ok && env(s)["CDCFLOW_TABLES"] == "" {
			t.Errorf("service %s: CDCFLOW_TABLES is not set; %s refuses to start without it", prog, prog)
		}
	}
	// Workers scale: no fixed name, no host port.
	if w, ok := svcs["worker"]; ok {
		if w.ContainerName != "" {
			t.Errorf("worker: container_name %q: --scale worker=N needs none", w.ContainerName)
		}
		for _, port := range w.Ports {
			if port.Published != "" {
				t.Errorf("worker: publishes host port %s: --scale worker=N needs none", port.Published)
			}
		}
	}
	// Every worker copies snapshots from the source capture reads.
	if got, want := env(svcs["worker"])["CDCFLOW_SOURCE_DSN"], env(svcs["capture"])["CDCFLOW_SOURCE_DSN"]; got != want || got == "" {
		t.Errorf("worker: CDCFLOW_SOURCE_DSN=%q, want capture's %q", got, want)
	}
	// One topic, created by kafka-topics with its dead-letter topic.
	topics := env(all["kafka-topics"])
	for _, name := range []string{"capture", "starter", "worker"} {
		if got := env(svcs[name])["CDCFLOW_TOPIC"]; got != topics["TOPIC"] {
			t.Errorf("service %s: CDCFLOW_TOPIC=%q, but kafka-topics creates %q", name, got, topics["TOPIC"])
		}
	}
	dlq := env(svcs["worker"])["CDCFLOW_DLQ_TOPIC"]
	if dlq == "" {
		dlq = topics["TOPIC"] + "_dlq"
	}
	if topics["DLQ_TOPIC"] != dlq {
		t.Errorf("kafka-topics: creates dead-letter topic %q, the worker writes %q", topics["DLQ_TOPIC"], dlq)
	}
}

// hostsOf returns the hosts a connection setting names.
func hostsOf(name, value string) []string {
	switch {
	case strings.HasSuffix(name, "_DSN"):
		u, err := url.Parse(value)
		if err != nil {
			return []string{value}
		}
		return []string{u.Hostname()}
	case name == "KAFKA_BROKERS" || name == "TEMPORAL_ADDRESS":
		var hosts []string
		for _, addr := range strings.Split(value, ",") {
			host, _, err := net.SplitHostPort(strings.TrimSpace(addr))
			if err != nil {
				host = addr
			}
			hosts = append(hosts, host)
		}
		return hosts
	}
	return nil
}

// checkMetrics checks that a program serving metrics does so on
// metricsPort, is probed there and is scraped there.
func checkMetrics(t *testing.T, name string, s types.ServiceConfig, addr string) {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port != metricsPort {
		t.Errorf("service %s: CDCFLOW_METRICS_ADDR=%q, want port %s", name, addr, metricsPort)
		return
	}
	if s.HealthCheck == nil || len(s.HealthCheck.Test) < 3 || s.HealthCheck.Test[0] != "CMD" ||
		s.HealthCheck.Test[1] != "/usr/local/bin/healthcheck" {
		t.Errorf("service %s: healthcheck %v, want [CMD /usr/local/bin/healthcheck http://127.0.0.1:%s/healthz]", name, s.HealthCheck, metricsPort)
	} else if u, err := url.Parse(s.HealthCheck.Test[2]); err != nil || u.Port() != metricsPort || u.Path != "/healthz" {
		t.Errorf("service %s: probes %s, want http://127.0.0.1:%s/healthz", name, s.HealthCheck.Test[2], metricsPort)
	}
	job, ok := prometheusJobs(t)[name]
	switch {
	case !ok:
		t.Errorf("service %s: Prometheus has no job %s", name, name)
	case name == "worker":
		if !slices.Contains(job.dns, "worker:"+metricsPort) {
			t.Errorf("service worker: Prometheus finds %v by DNS, want worker (port %s): workers scale", job.dns, metricsPort)
		}
	case !slices.Contains(job.static, name+":"+metricsPort) && !slices.Contains(job.dns, name+":"+metricsPort):
		t.Errorf("service %s: Prometheus scrapes %v, want %s:%s", name, append(job.static, job.dns...), name, metricsPort)
	}
}

type scrapeJob struct{ static, dns []string }

type prometheusConfig struct {
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
		DNSSDConfigs []struct {
			Names []string `yaml:"names"`
			Type  string   `yaml:"type"`
			Port  int      `yaml:"port"`
		} `yaml:"dns_sd_configs"`
	} `yaml:"scrape_configs"`
}

func readPrometheusConfig(t *testing.T) prometheusConfig {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var c prometheusConfig
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("prometheus/prometheus.yml: %v", err)
	}
	return c
}

func prometheusJobs(t *testing.T) map[string]scrapeJob {
	t.Helper()
	jobs := map[string]scrapeJob{}
	for _, sc := range readPrometheusConfig(t).ScrapeConfigs {
		var j scrapeJob
		for _, s := range sc.StaticConfigs {
			j.static = append(j.static, s.Targets...)
		}
		for _, d := range sc.DNSSDConfigs {
			for _, n := range d.Names {
				j.dns = append(j.dns, n+":"+strconv.Itoa(d.Port))
			}
		}
		if _, dup := jobs[sc.JobName]; dup {
			t.Errorf("prometheus/prometheus.yml: job %s twice", sc.JobName)
		}
		jobs[sc.JobName] = j
	}
	return jobs
}

func TestPrometheus(t *testing.T) {
	all := services(load(t))
	prom := all["prometheus"]
	mounts := map[string]string{} // target -> source
	for _, v := range prom.Volumes {
		if v.Type == types.VolumeTypeBind {
			mounts[v.Target] = v.Source
		}
	}
	c := readPrometheusConfig(t)
	if len(c.RuleFiles) == 0 {
		t.Error("prometheus/prometheus.yml: no rule_files")
	}
	alerts, _ := filepath.Abs(filepath.Join("prometheus", "alerts.yml"))
	for _, f := range c.RuleFiles {
		if mounts[f] != alerts {
			t.Errorf("prometheus/prometheus.yml: rule file %s is not prometheus/alerts.yml mounted (mounts: %v)", f, mounts)
		}
	}
	for job, j := range prometheusJobs(t) {
		for _, target := range append(j.static, j.dns...) {
			host, _, _ := net.SplitHostPort(target)
			if _, ok := all[host]; !ok && host != "localhost" {
				t.Errorf("prometheus/prometheus.yml: job %s scrapes %s, which is no service", job, target)
			}
		}
	}
}

func TestAlertRules(t *testing.T) {
	path := filepath.Join("prometheus", "alerts.yml")
	groups, errs := rulefmt.ParseFile(path)
	for _, err := range errs {
		t.Errorf("%s: %v", path, err)
	}
	if len(errs) > 0 {
		return
	}
	alerts := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert.Value == "" {
				continue
			}
			alerts++
			if r.Annotations["summary"] == "" {
				t.Errorf("%s: alert %s has no summary annotation", path, r.Alert.Value)
			}
		}
	}
	if alerts == 0 {
		t.Errorf("%s: no alert", path)
	}
}

func TestGrafana(t *testing.T) {
	g := services(load(t))["grafana"]
	mounts := map[string]string{} // target -> source
	for _, v := range g.Volumes {
		if v.Type == types.VolumeTypeBind {
			mounts[v.Target] = v.Source
		}
	}
	provisioning, _ := filepath.Abs(filepath.Join("grafana", "provisioning"))
	if mounts["/etc/grafana/provisioning"] != provisioning {
		t.Fatalf("grafana: grafana/provisioning is not mounted at /etc/grafana/provisioning (mounts: %v)", mounts)
	}
	var ds struct {
		Datasources []struct{ Name, Type, URL string } `yaml:"datasources"`
	}
	readYAML(t, filepath.Join("grafana", "provisioning", "datasources", "prometheus.yml"), &ds)
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || ds.Datasources[0].URL != "http://prometheus:9090" {
		t.Errorf("grafana: data sources %+v, want Prometheus at http://prometheus:9090", ds.Datasources)
	}
	var dash struct {
		Providers []struct {
			Type    string
			Options struct{ Path string }
		} `yaml:"providers"`
	}
	readYAML(t, filepath.Join("grafana", "provisioning", "dashboards", "cdcflow.yml"), &dash)
	dashboards, _ := filepath.Abs(filepath.Join("grafana", "dashboards"))
	if len(dash.Providers) != 1 || dash.Providers[0].Type != "file" || mounts[dash.Providers[0].Options.Path] != dashboards {
		t.Errorf("grafana: dashboard providers %+v, want one reading grafana/dashboards where it is mounted (mounts: %v)", dash.Providers, mounts)
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func TestMountsExist(t *testing.T) {
	for name, s := range services(load(t)) {
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("service %s: mounts %s: %v", name, v.Source, err)
			}
		}
	}
}

func TestDatabases(t *testing.T) {
	all := services(load(t))
	cmd := strings.Join(all["source-db"].Command, " ")
	for _, want := range []string{"wal_level=logical", "track_commit_timestamp=on", "max_replication_slots=", "max_wal_senders="} {
		if !strings.Contains(cmd, want) {
			t.Errorf("source-db: command %q lacks %s", cmd, want)
		}
	}
	// Both databases get the demo table, as internal/demo creates it.
	sql, err := os.ReadFile(filepath.Join("sql", "employees.sql"))
	if err != nil {
		t.Fatal(err)
	}
	squash := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	if !strings.Contains(squash(string(sql)), squash(demo.CreateTableSQL)) {
		t.Errorf("sql/employees.sql does not hold internal/demo's CreateTableSQL:\n%s", demo.CreateTableSQL)
	}
	initSQL, _ := filepath.Abs(filepath.Join("sql", "employees.sql"))
	for _, db := range []string{"source-db", "dest-db"} {
		found := false
		for _, v := range all[db].Volumes {
			found = found || (v.Source == initSQL && strings.HasPrefix(v.Target, "/docker-entrypoint-initdb.d/"))
		}
		if !found {
			t.Errorf("%s: sql/employees.sql is not mounted in /docker-entrypoint-initdb.d/", db)
		}
	}
}

func TestKafka(t *testing.T) {
	all := services(load(t))
	k := env(all["kafka"])
	if !strings.Contains(k["KAFKA_PROCESS_ROLES"], "controller") {
		t.Errorf("kafka: KAFKA_PROCESS_ROLES=%q: want KRaft (broker,controller)", k["KAFKA_PROCESS_ROLES"])
	}
	for name := range all {
		if strings.Contains(name, "zookeeper") {
			t.Errorf("service %s: KRaft needs no ZooKeeper", name)
		}
	}
	if id, err := base64.RawURLEncoding.DecodeString(k["CLUSTER_ID"]); err != nil || len(id) != 16 {
		t.Errorf("kafka: CLUSTER_ID=%q is not a Kafka UUID (16 bytes, base64)", k["CLUSTER_ID"])
	}
	atLeast := func(what, v string) {
		n, err := strconv.Atoi(v)
		if err != nil || n < kafkax.MaxMessageBytes {
			t.Errorf("%s=%q: want at least %d (kafkax.MaxMessageBytes)", what, v, kafkax.MaxMessageBytes)
		}
	}
	atLeast("kafka: KAFKA_MESSAGE_MAX_BYTES", k["KAFKA_MESSAGE_MAX_BYTES"])
	topics := env(all["kafka-topics"])
	atLeast("kafka-topics: MAX_MESSAGE_BYTES", topics["MAX_MESSAGE_BYTES"])
	if n, err := strconv.Atoi(topics["PARTITIONS"]); err != nil || n < 1 {
		t.Errorf("kafka-topics: PARTITIONS=%q", topics["PARTITIONS"])
	}
	script, err := os.ReadFile(filepath.Join("kafka", "create-topics.sh"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"max.message.bytes=$MAX_MESSAGE_BYTES", "cleanup.policy=delete", `"$TOPIC" "$DLQ_TOPIC"`} {
		if !strings.Contains(string(script), want) {
			t.Errorf("kafka/create-topics.sh lacks %s", want)
		}
	}
}

func TestSearchAttributes(t *testing.T) {
	setup := env(services(load(t))["temporal-setup"])
	got := map[string]string{}
	for _, pair := range strings.Fields(setup["SEARCH_ATTRIBUTES"]) {
		name, typ, _ := strings.Cut(pair, "=")
		got[name] = typ
	}
	if !maps.Equal(got, cdc.SearchAttributes) {
		t.Errorf("temporal-setup: SEARCH_ATTRIBUTES=%q, want cdc.SearchAttributes %v", setup["SEARCH_ATTRIBUTES"], cdc.SearchAttributes)
	}
}

// dockerfilePrograms returns the programs the Dockerfile builds.
func dockerfilePrograms(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	var progs []string
	for _, line := range strings.Split(text, "\n") {
		if !regexp.MustCompile(`^RUN .*\bgo build\b`).MatchString(line) {
			continue
		}
		for _, m := range regexp.MustCompile(`\s\./([a-z0-9]+)\b`).FindAllStringSubmatch(line, -1) {
			progs = append(progs, m[1])
		}
	}
	return progs
}

// mainPackages returns the repository's commands: top-level directories
// with package main.
func mainPackages(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("..")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		files, _ := filepath.Glob(filepath.Join("..", e.Name(), "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			b, err := os.ReadFile(f)
			if err == nil && regexp.MustCompile(`(?m)^package main$`).Match(b) {
				out = append(out, e.Name())
				break
			}
		}
	}
	return out
}

func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	goMod, err := os.ReadFile(filepath.Join("..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(goMod)
	if goVersion == nil {
		t.Fatal("go.mod: no go line")
	}
	stages := map[string]bool{}
	var froms, users []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			args := slices.DeleteFunc(f[1:], func(a string) bool { return strings.HasPrefix(a, "--") })
			image := args[0]
			froms = append(froms, image)
			if len(args) == 3 && strings.EqualFold(args[1], "AS") {
				stages[args[2]] = true
			}
			if stages[image] && image != args[len(args)-1] {
				continue // a previous stage
			}
			if strings.Contains(image, "$") {
				t.Errorf("Dockerfile: FROM %s: name the image, not a build argument, so that it is pinned here", image)
			} else if err := pinned(image); err != nil {
				t.Errorf("Dockerfile: FROM %v", err)
			}
			if strings.HasPrefix(image, "golang:") && !strings.HasPrefix(image, "golang:"+string(goVersion[1])) {
				t.Errorf("Dockerfile: FROM %s, but go.mod says go %s", image, goVersion[1])
			}
		case "USER":
			users = append(users, f[1])
		}
	}
	if len(froms) < 2 {
		t.Errorf("Dockerfile: FROM %v: want a build stage and a small final stage", froms)
	}
	if len(users) == 0 {
		t.Error("Dockerfile: no USER: the image would run as root")
	} else if u, _, _ := strings.Cut(users[len(users)-1], ":"); u == "root" || u == "0" {
		t.Errorf("Dockerfile: USER %s: want a non-root user", users[len(users)-1])
	}
	if !strings.Contains(string(b), "CGO_ENABLED=0") {
		t.Error("Dockerfile: build with CGO_ENABLED=0 for a static binary")
	}
	built := dockerfilePrograms(t)
	for _, prog := range mainPackages(t) {
		if prog == "devstack" { // make run only
			continue
		}
		if !slices.Contains(built, prog) {
			t.Errorf("Dockerfile: does not build ./%s (it builds %v)", prog, built)
		}
	}
	ignore, err := os.ReadFile(filepath.Join("..", ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^\.git$`).Match(ignore) {
		t.Error(".dockerignore: leave .git out of the build context")
	}
}
