package main

import (
	"context"
	"fmt"

	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/handlers/agenttoken"
	"github.com/deputyauth/deputy/handlers/flows"
	"github.com/deputyauth/deputy/plugin"
)

// enableAgentGrant adds the agent-token grant to p through the plugin's
// extension point, the way a host does until plugin.New wires it itself:
// a keyring over the plugin's store and secret, and a Minter on it. It must
// run before p.Provider or p.Register composes the provider. It returns the
// verifier of the tokens it mints, for the verify group.
func enableAgentGrant(ctx context.Context, p *plugin.Plugin, secret []byte) (*agenttoken.AgentVerifier, error) {
	cfg := p.Config()
	keys, err := agenttoken.NewKeyring(ctx, agenttoken.KeyringConfig{
		Store:        cfg.Store,
		SystemSecret: secret,
		Algorithm:    cfg.AgentTokenAlgorithm,
		Logger:       cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("agent keyring: %w", err)
	}
	m := &agenttoken.Minter{
		Keys:      keys,
		Store:     cfg.Store,
		Directory: cfg.Directory,
		Catalog:   p.Catalog(),
		Issuer:    cfg.Issuer,
		Lifespan:  cfg.AgentTokenLifespan,
		Logger:    cfg.Logger,
	}
	// Subject tokens are decoded into the plugin's own session type, which
	// carries the organization they are bound to.
	newSession := func() fosite.Session { return p.NewSession("", "") }
	if err := p.AddFactories(flows.AgentTokenGrantFactory(m, newSession)); err != nil {
		return nil, err
	}
	return &agenttoken.AgentVerifier{Keys: keys, Issuer: cfg.Issuer}, nil
}
