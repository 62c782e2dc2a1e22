package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/deputyauth/deputy/apps"
	"github.com/deputyauth/deputy/handlers/agenttoken"
	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/scope"
)

// The admin subcommands share one shape: parse flags, open and migrate the
// database, do one thing, print the result as text or (--json) JSON. Errors
// go to stderr with exit code 1; usage errors get 2.

// cliFail prints err and returns the exit code for it.
func cliFail(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "deputy-idp %s: %v\n", cmd, err)
	return 1
}

// parseFlags parses args, refusing leftovers.
func parseFlags(fs *flag.FlagSet, args []string) bool {
	if err := fs.Parse(args); err != nil {
		return false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return false
	}
	return true
}

// printResult writes v as indented JSON, or as "key: value" lines in the
// given order.
func printResult(w io.Writer, asJSON bool, v map[string]any, order ...string) {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(v) //nolint:errcheck
		return
	}
	for _, k := range order {
		switch x := v[k].(type) {
		case []string:
			fmt.Fprintf(w, "%s: %s\n", k, strings.Join(x, " "))
		default:
			fmt.Fprintf(w, "%s: %v\n", k, x)
		}
	}
}

func cmdUsersCreate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("users create", stderr)
	var common commonFlags
	common.register(fs)
	username := fs.String("username", "", "login name (required)")
	password := fs.String("password", "", "password, at least 8 characters (required)")
	org := fs.String("org", "", "organization to add the user to (required)")
	scopes := fs.String("scope", "", `space-separated scopes the user holds in the organization, e.g. "projects:read"`)
	admin := fs.Bool("admin", false, "the user may manage every user's apps")
	if !parseFlags(fs, args) {
		return 2
	}
	if *username == "" || *password == "" || *org == "" {
		fmt.Fprintln(stderr, "users create: --username, --password and --org are required")
		return 2
	}
	if !membershipFlagsValid(stderr, "users create", *org, *scopes) {
		return 2
	}
	st, u, err := openStore(ctx, common.databaseURL)
	if err != nil {
		return cliFail(stderr, "users create", err)
	}
	defer st.Close()
	nu, err := u.create(ctx, *username, *password, *admin)
	if err != nil {
		return cliFail(stderr, "users create", err)
	}
	if err := u.setMembership(ctx, nu.ID, *org, scope.Parse(*scopes)); err != nil {
		return cliFail(stderr, "users create", err)
	}
	printResult(stdout, common.json, map[string]any{
		"id": nu.ID, "username": nu.Username, "admin": nu.Admin,
		"organization": *org, "scopes": nonNil(scope.Parse(*scopes)),
	}, "id", "username", "admin", "organization", "scopes")
	return 0
}

// membershipFlagsValid checks a membership's --org and --scope, and says
// what is wrong on stderr as cmd.
func membershipFlagsValid(stderr io.Writer, cmd, org, scopes string) bool {
	if !protocol.ValidOrganization(org) {
		// Tokens, approvals and agent tokens could never name it.
		fmt.Fprintf(stderr, "%s: --org must be %s\n", cmd, protocol.OrganizationRule)
		return false
	}
	if err := checkScopeFlag(scope.Parse(scopes)); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", cmd, err)
		return false
	}
	return true
}

// cmdUsersSetScopes gives a user exactly the scopes named in one
// organization, replacing what they held there (none: the membership
// keeps no scopes). Tokens acting for them narrow at their next use, on
// every replica: the Directory answers the new scopes, and the user's
// revision moves on so that no token endpoint issues from what it kept.
func cmdUsersSetScopes(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("users set-scopes", stderr)
	var common commonFlags
	common.register(fs)
	username := fs.String("username", "", "login name or user id (required)")
	org := fs.String("org", "", "organization (required)")
	scopes := fs.String("scope", "", `space-separated scopes the user holds there from now on, e.g. "projects:read"; empty for none`)
	if !parseFlags(fs, args) {
		return 2
	}
	if *username == "" || *org == "" {
		fmt.Fprintln(stderr, "users set-scopes: --username and --org are required")
		return 2
	}
	if !membershipFlagsValid(stderr, "users set-scopes", *org, *scopes) {
		return 2
	}
	st, u, err := openStore(ctx, common.databaseURL)
	if err != nil {
		return cliFail(stderr, "users set-scopes", err)
	}
	defer st.Close()
	usr, err := u.lookup(ctx, *username)
	if err != nil {
		return cliFail(stderr, "users set-scopes", err)
	}
	if err := u.setMembership(ctx, usr.ID, *org, scope.Parse(*scopes)); err != nil {
		return cliFail(stderr, "users set-scopes", err)
	}
	printResult(stdout, common.json, map[string]any{
		"id": usr.ID, "username": usr.Username, "organization": *org, "scopes": nonNil(scope.Normalize(scope.Parse(*scopes))),
	}, "id", "username", "organization", "scopes")
	return 0
}

// cmdUsersDisable disables (or with --enable re-enables) an account. A
// disabled user cannot sign in, their sessions end, and every token acting
// for them (their apps' client-credentials tokens, their agents') stops
// working at its next use: the Directory answers ErrUserDisabled.
func cmdUsersDisable(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("users disable", stderr)
	var common commonFlags
	common.register(fs)
	username := fs.String("username", "", "login name or user id (required)")
	enable := fs.Bool("enable", false, "re-enable the account instead")
	if !parseFlags(fs, args) {
		return 2
	}
	if *username == "" {
		fmt.Fprintln(stderr, "users disable: --username is required")
		return 2
	}
	st, u, err := openStore(ctx, common.databaseURL)
	if err != nil {
		return cliFail(stderr, "users disable", err)
	}
	defer st.Close()
	usr, err := u.lookup(ctx, *username)
	if err != nil {
		return cliFail(stderr, "users disable", err)
	}
	if err := u.setDisabled(ctx, usr.ID, !*enable); err != nil {
		return cliFail(stderr, "users disable", err)
	}
	printResult(stdout, common.json, map[string]any{
		"id": usr.ID, "username": usr.Username, "disabled": !*enable,
	}, "id", "username", "disabled")
	return 0
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// flags are the command line's names for the apps service's fields.
var flags = map[string]string{
	apps.FieldName:         "--name",
	apps.FieldGrantTypes:   "--grant",
	apps.FieldRedirectURIs: "--redirect-uri",
	apps.FieldScopes:       "--scope",
	apps.FieldOwner:        "--owner",
	apps.FieldPublic:       "--public",
	apps.FieldAgent:        "--agent",
}

// usageProblem reports a refusal of the apps service as a usage error
// (exit 2) naming the flag, and whether err was one.
func usageProblem(stderr io.Writer, cmd string, err error) bool {
	var fe *apps.FieldError
	if !errors.As(err, &fe) {
		return false
	}
	name := flags[fe.Field]
	if name == "" {
		name = fe.Field
	}
	fmt.Fprintf(stderr, "%s: %s: %s\n", cmd, name, fe.Message)
	return true
}

// cmdAppsCreate makes an owned client_credentials app for a user, through
// the apps service's administrator path.
func cmdAppsCreate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("apps create", stderr)
	var common commonFlags
	common.register(fs)
	owner := fs.String("owner", "", "username (or id) of the user whose authority the app's tokens carry (required)")
	name := fs.String("name", "", "display name (required)")
	var grants stringsFlag
	fs.Var(&grants, "grant", "grant type; owned apps use client_credentials (the default)")
	scopes := fs.String("scope", "", `space-separated scopes the app may request (required), e.g. "projects:read"`)
	if !parseFlags(fs, args) {
		return 2
	}
	if *owner == "" || *name == "" || *scopes == "" {
		fmt.Fprintln(stderr, "apps create: --owner, --name and --scope are required")
		return 2
	}
	for _, g := range grants {
		if g != protocol.GrantTypeClientCredentials {
			fmt.Fprintf(stderr, "apps create: an owned app only uses the client_credentials grant, not %q; use `clients create` for other clients\n", g)
			return 2
		}
	}
	in := apps.AdminInput{
		Input: apps.Input{Name: *name, GrantTypes: []string{protocol.GrantTypeClientCredentials}, Scopes: scope.Parse(*scopes)},
		Owner: *owner,
	}
	// The rules first, so that a mistyped flag needs no database.
	if usageProblem(stderr, "apps create", apps.Validate(in, nil)) {
		return 2
	}
	st, u, err := openStore(ctx, common.databaseURL)
	if err != nil {
		return cliFail(stderr, "apps create", err)
	}
	defer st.Close()
	usr, err := u.lookup(ctx, *owner)
	if err != nil {
		return cliFail(stderr, "apps create", fmt.Errorf("owner %q: %w", *owner, err))
	}
	if usr.Disabled {
		return cliFail(stderr, "apps create", fmt.Errorf("owner %q: %w", *owner, scope.ErrUserDisabled))
	}
	in.Owner = usr.ID
	c, secret, err := apps.New(apps.Config{Store: st}).AdminCreate(ctx, in)
	if usageProblem(stderr, "apps create", err) {
		return 2
	}
	if err != nil {
		return cliFail(stderr, "apps create", err)
	}
	printResult(stdout, common.json, map[string]any{
		"client_id": c.ID, "client_secret": secret, "name": c.Name, "owner": usr.Username,
		"owner_user_id": usr.ID, "grant_types": []string(c.GrantTypes), "scopes": nonNil(c.Scopes),
	}, "client_id", "client_secret", "name", "owner", "grant_types", "scopes")
	return 0
}

// cmdClientsCreate makes a client without an owner (an authorization_code
// client, an agent platform), through the apps service's administrator
// path: the only way to give the agent-token grant.
func cmdClientsCreate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("clients create", stderr)
	var common commonFlags
	common.register(fs)
	name := fs.String("name", "", "display name (required)")
	var grants, redirects stringsFlag
	fs.Var(&grants, "grant", "grant type, repeatable: authorization_code, refresh_token, "+protocol.GrantTypeAgentToken)
	fs.Var(&redirects, "redirect-uri", "redirect URI, repeatable (required with authorization_code)")
	scopes := fs.String("scope", "", `space-separated scopes the client may request (required)`)
	firstParty := fs.Bool("first-party", false, "users are not asked to consent (only for clients you run yourself)")
	public := fs.Bool("public", false, "a public client (native app): no secret, PKCE only")
	agent := fs.Bool("agent", false, "an agent (an MCP client, say): write scopes users grant it are approvals that expire after the grant lifespan")
	if !parseFlags(fs, args) {
		return 2
	}
	if *name == "" || *scopes == "" || len(grants) == 0 {
		fmt.Fprintln(stderr, "clients create: --name, --grant and --scope are required")
		return 2
	}
	in := apps.AdminInput{
		Input:      apps.Input{Name: *name, GrantTypes: grants, RedirectURIs: redirects, Scopes: scope.Parse(*scopes)},
		FirstParty: *firstParty,
		Public:     *public,
		Agent:      *agent,
	}
	err := apps.Validate(in, nil)
	var fe *apps.FieldError
	if errors.As(err, &fe) && fe.Field == apps.FieldOwner {
		fmt.Fprintln(stderr, "clients create: --grant client_credentials needs an owner: use `apps create --owner`")
		return 2
	}
	if usageProblem(stderr, "clients create", err) {
		return 2
	}
	st, _, err := openStore(ctx, common.databaseURL)
	if err != nil {
		return cliFail(stderr, "clients create", err)
	}
	defer st.Close()
	c, secret, err := apps.New(apps.Config{Store: st}).AdminCreate(ctx, in)
	if usageProblem(stderr, "clients create", err) {
		return 2
	}
	if err != nil {
		return cliFail(stderr, "clients create", err)
	}
	out := map[string]any{
		"client_id": c.ID, "name": c.Name, "grant_types": []string(c.GrantTypes),
		"redirect_uris": nonNil(c.RedirectURIs), "scopes": nonNil(c.Scopes), "first_party": c.FirstParty, "public": c.Public, "agent": c.Agent,
	}
	order := []string{"client_id"}
	if !c.Public {
		out["client_secret"] = secret
		order = append(order, "client_secret")
	}
	printResult(stdout, common.json, out, append(order, "name", "grant_types", "redirect_uris", "scopes", "first_party", "agent")...)
	return 0
}

// checkScopeFlag refuses a --scope that is not an RFC 6749 scope token.
func checkScopeFlag(scopes []string) error {
	for _, s := range scopes {
		if !protocol.ValidScopeToken(s) {
			return fmt.Errorf("--scope %q must be %s", s, protocol.ScopeTokenRule)
		}
	}
	return nil
}

func cmdKeysRotate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("keys rotate", stderr)
	var common commonFlags
	common.register(fs)
	secret := fs.String("system-secret", os.Getenv("DEPUTY_SYSTEM_SECRET"), "the servers' system secret (env DEPUTY_SYSTEM_SECRET)")
	if !parseFlags(fs, args) {
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	sys, err := resolveSystemSecret(common.databaseURL, []byte(*secret), log)
	if err != nil {
		return cliFail(stderr, "keys rotate", err)
	}
	st, _, err := openStore(ctx, common.databaseURL)
	if err != nil {
		return cliFail(stderr, "keys rotate", err)
	}
	defer st.Close()
	kr, err := agenttoken.NewKeyring(ctx, agenttoken.KeyringConfig{Store: st, SystemSecret: sys, Logger: log})
	if err != nil {
		return cliFail(stderr, "keys rotate", err)
	}
	if err := kr.RotateKeys(ctx); err != nil {
		return cliFail(stderr, "keys rotate", err)
	}
	var jwks struct {
		Keys []struct {
			Kid string `json:"kid"`
			Alg string `json:"alg"`
		} `json:"keys"`
	}
	json.Unmarshal(kr.JWKS(), &jwks) //nolint:errcheck // best effort, for the printout
	kids := []string{}
	for _, k := range jwks.Keys {
		kids = append(kids, k.Kid)
	}
	printResult(stdout, common.json, map[string]any{"rotated": true, "published_kids": kids}, "rotated", "published_kids")
	return 0
}
