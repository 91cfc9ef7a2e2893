module hotsup.example/recipes/go

go 1.19
