// Command deputy-idp is a small, real fosite identity provider that embeds
// the deputy plugin: password login, settings pages for owned apps, the
// authorization-code flow with PKCE, the agent-token grant and its consent
// page, and a sample protected API that shows the whole delegation loop.
//
//	deputy-idp [serve] [--listen ADDR] [--database-url URL] [--issuer URL] [--system-secret S] [--no-demo]
//	deputy-idp users create --username U --password P --org ORG --scope "a b" [--admin]
//	deputy-idp users set-scopes --username U --org ORG --scope "a b"
//	deputy-idp users disable --username U [--enable]
//	deputy-idp apps create --owner U --name N --grant client_credentials --scope "a b"
//	deputy-idp clients create --name N --grant G [--grant G2] [--redirect-uri URI] --scope "a b" [--first-party]
//	deputy-idp keys rotate
//	deputy-idp healthcheck [--ready] [--url URL]
//
// Every subcommand takes --database-url (DATABASE_URL) and --json.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage:
  deputy-idp [serve] [flags]               run the IdP (the default)
  deputy-idp users create [flags]          add a user with a membership
  deputy-idp users set-scopes [flags]      replace a user's scopes in an organization
  deputy-idp users disable --username U    disable an account (--enable to undo)
  deputy-idp apps create [flags]           add an owned client-credentials app
  deputy-idp clients create [flags]        add an unowned OAuth2 client
  deputy-idp keys rotate [flags]           rotate the agent-token signing key
  deputy-idp healthcheck [--ready]         exit 0 when a running server is live (ready)

Run "deputy-idp <command> -h" for the flags of a command.
`

// run is main without the process: tests call it with their own arguments
// and writers, and read the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || len(args[0]) > 0 && args[0][0] == '-' {
		return cmdServe(ctx, args, stdout, stderr)
	}
	cmd, rest := args[0], args[1:]
	sub := ""
	if len(rest) > 0 && len(rest[0]) > 0 && rest[0][0] != '-' {
		sub, rest = rest[0], rest[1:]
	}
	switch {
	case cmd == "serve":
		if sub != "" {
			rest = append([]string{sub}, rest...)
		}
		return cmdServe(ctx, rest, stdout, stderr)
	case cmd == "users" && sub == "create":
		return cmdUsersCreate(ctx, rest, stdout, stderr)
	case cmd == "users" && sub == "set-scopes":
		return cmdUsersSetScopes(ctx, rest, stdout, stderr)
	case cmd == "users" && sub == "disable":
		return cmdUsersDisable(ctx, rest, stdout, stderr)
	case cmd == "apps" && sub == "create":
		return cmdAppsCreate(ctx, rest, stdout, stderr)
	case cmd == "clients" && sub == "create":
		return cmdClientsCreate(ctx, rest, stdout, stderr)
	case cmd == "keys" && sub == "rotate":
		return cmdKeysRotate(ctx, rest, stdout, stderr)
	case cmd == "healthcheck":
		if sub != "" {
			rest = append([]string{sub}, rest...)
		}
		return cmdHealthcheck(ctx, rest, stdout, stderr)
	case cmd == "help" || cmd == "-h" || cmd == "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "deputy-idp: unknown command %q\n\n%s", joinArgs(cmd, sub), usage)
		return 2
	}
}

func joinArgs(a, b string) string {
	if b == "" {
		return a
	}
	return a + " " + b
}
