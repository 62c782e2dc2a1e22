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
	"sort"
	"strings"

	"github.com/deputyauth/deputy/handlers/agenttoken"
	"github.com/deputyauth/deputy/internal/clientsecret"
	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
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
	if !protocol.ValidOrganization(*org) {
		// Tokens, approvals and agent tokens could never name it.
		fmt.Fprintf(stderr, "users create: --org must be %s\n", protocol.OrganizationRule)
		return 2
	}
	if err := checkScopeFlag(scope.Parse(*scopes)); err != nil {
		fmt.Fprintf(stderr, "users create: %v\n", err)
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
	if err := checkScopeFlag(scope.Parse(*scopes)); err != nil {
		fmt.Fprintf(stderr, "apps create: %v\n", err)
		return 2
	}
	if len(grants) == 0 {
		grants = stringsFlag{protocol.GrantTypeClientCredentials}
	}
	for _, g := range grants {
		if g != protocol.GrantTypeClientCredentials {
			fmt.Fprintf(stderr, "apps create: an owned app only uses the client_credentials grant, not %q; use `clients create` for other clients\n", g)
			return 2
		}
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
	c := &storage.Client{
		ID:         newClientID(),
		Name:       strings.TrimSpace(*name),
		GrantTypes: []string{protocol.GrantTypeClientCredentials},
		Scopes:     scope.Parse(*scopes),
	}
	c.SetOwner(usr.ID)
	secret, err := createClientWithSecret(ctx, st, c)
	if err != nil {
		return cliFail(stderr, "apps create", err)
	}
	printResult(stdout, common.json, map[string]any{
		"client_id": c.ID, "client_secret": secret, "name": c.Name, "owner": usr.Username,
		"owner_user_id": usr.ID, "grant_types": []string(c.GrantTypes), "scopes": nonNil(c.Scopes),
	}, "client_id", "client_secret", "name", "owner", "grant_types", "scopes")
	return 0
}

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
	c := &storage.Client{
		ID:           newClientID(),
		Name:         strings.TrimSpace(*name),
		GrantTypes:   normalizeList(grants),
		RedirectURIs: []string(redirects),
		Scopes:       scope.Parse(*scopes),
		FirstParty:   *firstParty,
		Public:       *public,
		Agent:        *agent,
	}
	if err := validateUnownedClient(c); err != nil {
		fmt.Fprintf(stderr, "clients create: %v\n", err)
		return 2
	}
	st, _, err := openStore(ctx, common.databaseURL)
	if err != nil {
		return cliFail(stderr, "clients create", err)
	}
	defer st.Close()
	secret := ""
	if c.Public {
		c.TokenEndpointAuthMethod = "none"
		err = st.CreateClient(ctx, c)
	} else {
		secret, err = createClientWithSecret(ctx, st, c)
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

var knownUnownedGrants = map[string]bool{
	protocol.GrantTypeAuthorizationCode: true,
	protocol.GrantTypeRefreshToken:      true,
	protocol.GrantTypeAgentToken:        true,
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

// validateUnownedClient applies the rules of DESIGN.md §1 to a client
// without an owner: no client_credentials (a client-credentials token acts
// as its owner, and this client has none), redirect URIs that are absolute
// and allowed by protocol.CheckRedirectURI (the apps API's rule), scopes
// that are scope tokens, and response types that follow the grants.
func validateUnownedClient(c *storage.Client) error {
	for _, g := range c.GrantTypes {
		if g == protocol.GrantTypeClientCredentials {
			return errors.New("--grant client_credentials needs an owner: use `apps create --owner`")
		}
		if !knownUnownedGrants[g] {
			return fmt.Errorf("--grant %q is not supported", g)
		}
	}
	hasCode := scope.Contains(c.GrantTypes, protocol.GrantTypeAuthorizationCode)
	if hasCode && len(c.RedirectURIs) == 0 {
		return errors.New("--redirect-uri is required with authorization_code")
	}
	if !hasCode && len(c.RedirectURIs) > 0 {
		return errors.New("--redirect-uri only makes sense with authorization_code")
	}
	if c.Agent && !hasCode {
		return errors.New("--agent is for clients users authorize (authorization_code): an agent platform's agent tokens already need approvals")
	}
	if c.Agent && c.FirstParty {
		return errors.New("--agent and --first-party do not mix: an agent's write scopes need the user's approval on the consent screen")
	}
	if c.Public && scope.Contains(c.GrantTypes, protocol.GrantTypeAgentToken) {
		return errors.New("the agent-token grant needs a confidential client (drop --public)")
	}
	for _, ru := range c.RedirectURIs {
		if err := protocol.CheckRedirectURI(ru); err != nil {
			return fmt.Errorf("--redirect-uri %q: %w", ru, err)
		}
	}
	if err := checkScopeFlag(c.Scopes); err != nil {
		return err
	}
	if hasCode {
		c.ResponseTypes = []string{"code"}
	}
	return nil
}

func normalizeList(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		s = strings.TrimSpace(s)
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// newClientID is a random client id in the apps API's format (128 bits, hex).
func newClientID() string { return storage.NewID(16) }

// createClientWithSecret stores c and its first secret in one transaction,
// returning the secret, which exists nowhere else from then on.
func createClientWithSecret(ctx context.Context, st *storage.Store, c *storage.Client) (string, error) {
	secret, hash, prefix, err := clientsecret.NewClientSecret()
	if err != nil {
		return "", err
	}
	err = st.InTx(ctx, func(ctx context.Context) error {
		if err := st.CreateClient(ctx, c); err != nil {
			return err
		}
		_, err := st.CreateClientSecret(ctx, c.ID, hash, prefix)
		return err
	})
	if err != nil {
		return "", err
	}
	return secret, nil
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
