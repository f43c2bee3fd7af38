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

// AuthConfigPath is where WriteServerConfig puts the part of the server
// configuration every server of a deployment shares: the operator, the
// system account and the preloaded accounts. deploy/nats's configurations
// include it.
func (a *Authority) AuthConfigPath() string { return filepath.Join(a.dir, "auth.conf") }

var authTmpl = template.Must(template.New("auth").Parse(`# Outpost's identity for nats-server, written by 'coordinator init'.
# Every server of a deployment includes it (see deploy/nats).

# Decentralised JWT auth: the operator signs the accounts, one per
# credential besides SYS and OUTPOST. No anonymous access.
operator: {{printf "%q" .OperatorJWT}}
system_account: {{.Sys}}

# Newer JWTs, pushed on $SYS.REQ.CLAIMS.UPDATE to a full resolver (new
# credentials' accounts, revocations), win over these.
resolver_preload: {
{{- range .Accounts}}
  {{.Key}}: "{{.JWT}}"
{{- end}}
}
`))

var confTmpl = template.Must(template.New("conf").Parse(`# nats-server configuration for Outpost, written by 'coordinator init'.
# Start a stock server with:  nats-server -c {{.Path}}
# The embedded server of 'coordinator run' reads this same file.
server_name: {{.ServerName}}
host: {{printf "%q" .Host}}
port: {{.Port}}

include auth.conf

# A full resolver keeps account JWTs on disk (the coordinator writes each
# credential's account there too) and takes updates (new accounts,
# revocations) pushed on $SYS.REQ.CLAIMS.UPDATE.
resolver: {
  type: full
  dir: {{printf "%q" .ResolverDir}}
  allow_delete: false
  interval: "2m"
  timeout: "5s"
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
	var auth bytes.Buffer
	if err := authTmpl.Execute(&auth, map[string]any{"OperatorJWT": a.OperatorJWTPath(), "Sys": a.SysPublicKey(), "Accounts": accts}); err != nil {
		return "", fmt.Errorf("server config: %w", err)
	}
	if err := writePrivate(a.AuthConfigPath(), auth.Bytes()); err != nil {
		return "", err
	}
	var buf bytes.Buffer
	err := confTmpl.Execute(&buf, map[string]any{
		"Path": a.ServerConfigPath(), "ServerName": c.ServerName, "Host": c.Host, "Port": c.Port,
		"ResolverDir": a.ResolverDir(), "JetStreamDir": a.JetStreamDir(),
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
