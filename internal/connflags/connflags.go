package connflags

import (
	"os"

	"github.com/spf13/pflag"

	"github.com/outpost-run/outpost/client"
)

// Flags are the connection flags.
type Flags struct {
	Server   string
	Creds    string
	TLS      client.TLS
	JSDomain string
}

// Bind adds --server, --creds and the TLS flags to fs, with defaults from
// $OUTPOST_SERVER, $OUTPOST_CREDS and $OUTPOST_TLS_{CA,CERT,KEY}.
func (f *Flags) Bind(fs *pflag.FlagSet, credsUsage string) {
	fs.StringVar(&f.Server, "server", envOr("OUTPOST_SERVER", client.DefaultURL), "NATS server URL(s), comma separated [$OUTPOST_SERVER]")
	fs.StringVar(&f.Creds, "creds", os.Getenv("OUTPOST_CREDS"), credsUsage+" [$OUTPOST_CREDS]")
	BindTLS(fs, &f.TLS, "")
	fs.StringVar(&f.JSDomain, "js-domain", os.Getenv("OUTPOST_JS_DOMAIN"), "JetStream domain of the hub, when connected through a leaf node (deploy/nats: outpost) [$OUTPOST_JS_DOMAIN]")
}

// BindTLS adds --tls-ca, --tls-cert and --tls-key to fs; what describes
// what the certificate is for.
func BindTLS(fs *pflag.FlagSet, t *client.TLS, what string) {
	if what == "" {
		what = "client certificate, for servers that require mTLS"
	}
	fs.StringVar(&t.CA, "tls-ca", os.Getenv("OUTPOST_TLS_CA"), "CA certificate (PEM) to verify the server with [$OUTPOST_TLS_CA]")
	fs.StringVar(&t.Cert, "tls-cert", os.Getenv("OUTPOST_TLS_CERT"), what+" (PEM) [$OUTPOST_TLS_CERT]")
	fs.StringVar(&t.Key, "tls-key", os.Getenv("OUTPOST_TLS_KEY"), "key of --tls-cert (PEM) [$OUTPOST_TLS_KEY]")
}

// Dial returns the dial options the flags describe.
func (f *Flags) Dial(connName string) client.DialOptions {
	return client.DialOptions{URL: f.Server, Creds: f.Creds, ConnName: connName, TLS: f.TLS, JSDomain: f.JSDomain}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
