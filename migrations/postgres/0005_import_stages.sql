CREATE TABLE "import_stages" (
	"stage" uuid NOT NULL,
	"position" integer NOT NULL,
	"role" text NOT NULL,
	"content" text NOT NULL,
	"created_at" timestamp(3) with time zone NOT NULL,
	"staged_at" timestamp(3) with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "import_stages_pkey" PRIMARY KEY("stage","position")
);
--> statement-breakpoint
CREATE INDEX "import_stages_staged_idx" ON "import_stages" USING btree ("staged_at");