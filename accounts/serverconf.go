package accounts

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sort"
	"text/template"
)

// ServerConfig is what the nats-server configuration written by
// WriteServerConfig sets.
type ServerConfig struct {
	Host string
	Port int
	// ServerName names the server in logs and JetStream metadata.
	ServerName string
	// TLS, when its certificate is set, makes clients connect with TLS 1.2
	// or later; with Verify, they must also present a certificate signed by
	// the CA (mTLS), on top of their JWT.
	TLS    TLSFiles
	Verify bool
}

// ServerConfigPath is where WriteServerConfig puts the configuration.
func (a *Authority) ServerConfigPath() string { return filepath.Join(a.dir, "nats-server.conf") }

// JetStreamDir is where the server keeps its streams.
func (a *Authority) JetStreamDir() string { return filepath.Join(a.dir, "jetstream") }

// ResolverDir is where the server keeps account JWTs.
func (a *Authority) ResolverDir() string { return filepath.Join(a.dir, "resolver") }

var confTmpl = template.Must(template.New("conf").Parse(`# nats-server configuration for Outpost, written by 'coordinator init'.
# Start a stock server with:  nats-server -c {{.Path}}
# The embedded server of 'coordinator run' reads this same file.
server_name: {{.ServerName}}
host: {{printf "%q" .Host}}
port: {{.Port}}

# Decentralised JWT auth: the operator signs the accounts, one per
# credential besides SYS and OUTPOST. No anonymous access.
operator: {{printf "%q" .OperatorJWT}}
system_account: {{.Sys}}

# A full resolver keeps account JWTs on disk (the coordinator writes each
# credential's account there too) and takes updates (new accounts,
# revocations) pushed on $SYS.REQ.CLAIMS.UPDATE; newer JWTs win over these
# preloads.
resolver: {
  type: full
  dir: {{printf "%q" .ResolverDir}}
  allow_delete: false
  interval: "2m"
  timeout: "5s"
}
resolver_preload: {
{{- range .Accounts}}
  {{.Key}}: "{{.JWT}}"
{{- end}}
}

jetstream: {
  store_dir: {{printf "%q" .JetStreamDir}}
}
{{- with .TLS}}{{if .ServerCert}}

tls: {
  cert_file: {{printf "%q" .ServerCert}}
  key_file: {{printf "%q" .ServerKey}}
{{- if .CA}}
  ca_file: {{printf "%q" .CA}}
{{- end}}
  verify: {{$.Verify}}
  min_version: "1.2"
  timeout: 2
}
{{- end}}{{end}}
`))

// WriteServerConfig writes a nats-server configuration that runs Outpost's
// identity on a stock server, and returns its path.
func (a *Authority) WriteServerConfig(c ServerConfig) (string, error) {
	type acct struct{ Key, JWT string }
	var accts []acct
	for k, v := range a.AccountJWTs() {
		accts = append(accts, acct{k, v})
	}
	sort.Slice(accts, func(i, j int) bool { return accts[i].Key < accts[j].Key })
	if c.ServerName == "" {
		c.ServerName = "outpost"
	}
	var buf bytes.Buffer
	err := confTmpl.Execute(&buf, map[string]any{
		"Path": a.ServerConfigPath(), "ServerName": c.ServerName, "Host": c.Host, "Port": c.Port,
		"OperatorJWT": a.OperatorJWTPath(), "Sys": a.SysPublicKey(),
		"ResolverDir": a.ResolverDir(), "JetStreamDir": a.JetStreamDir(), "Accounts": accts,
		"TLS": c.TLS, "Verify": c.Verify,
	})
	if err != nil {
		return "", fmt.Errorf("server config: %w", err)
	}
	if err := writePrivate(a.ServerConfigPath(), buf.Bytes()); err != nil {
		return "", err
	}
	return a.ServerConfigPath(), nil
}
